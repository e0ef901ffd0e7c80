from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tunevision.cli.main import main
from tunevision.classify.export import check_parity, export_bundle


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_model_metadata_and_passes_parity(tiny_bundle: Path, tmp_path: Path, fmt: str) -> None:
    path, parity = export_bundle(tiny_bundle, fmt, tmp_path / "out")
    assert path.is_file() and (tmp_path / "out" / "model.json").is_file()
    assert parity.ok and parity.images >= 3 and parity.top1_agreement == 1.0
    assert json.loads((tmp_path / "out" / f"parity-{fmt}.json").read_text())["max_abs_diff"] < 1e-4


def test_parity_check_catches_disagreement() -> None:
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert not check_parity(a, a[:, ::-1]).ok
    assert check_parity(a, a + 1e-6).ok


def test_onnx_metadata_and_predict_without_torch_model(tiny_bundle: Path, tmp_path: Path,
                                                       colour_folders: Path) -> None:
    import onnxruntime as ort
    path, _ = export_bundle(tiny_bundle, "onnx", tmp_path / "out")
    props = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert json.loads(props["classes"]) == ["blue", "red"] and json.loads(props["temperature"]) == 1.5
    img = str(next((colour_folders / "red").glob("*.png")))
    r_onnx = CliRunner().invoke(main, ["predict", str(path), img, "--json"], catch_exceptions=False)
    r_torch = CliRunner().invoke(main, ["predict", str(tiny_bundle), img, "--json", "--device", "cpu"],
                                 catch_exceptions=False)
    a, b = json.loads(r_onnx.output)[0]["top"], json.loads(r_torch.output)[0]["top"]
    assert a[0]["label"] == b[0]["label"]
    assert abs(a[0]["prob"] - b[0]["prob"]) < 2e-2  # torch path may run bf16 on this CPU; ONNX runs fp32


def test_bad_parity_sample_is_a_one_line_error(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    r = CliRunner().invoke(main, ["export", str(tiny_bundle), "--samples", str(tmp_path / "bad.jpg"),
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "parity sample" in r.output and "Traceback" not in r.output


def test_predict_runtime_onnx_exports_once_and_agrees_with_torch(tiny_bundle: Path, colour_folders: Path) -> None:
    imgs = [str(colour_folders / "red"), str(colour_folders / "blue")]
    r_onnx = CliRunner().invoke(main, ["predict", str(tiny_bundle), *imgs, "--json", "--runtime", "onnx"],
                                catch_exceptions=False)
    assert r_onnx.exit_code == 0, r_onnx.output
    onnx_file = tiny_bundle / "export" / "model.onnx"
    made = onnx_file.stat().st_mtime_ns
    r_torch = CliRunner().invoke(main, ["predict", str(tiny_bundle), *imgs, "--json", "--device", "cpu"],
                                 catch_exceptions=False)
    for a, b in zip(json.loads(r_onnx.output), json.loads(r_torch.output)):
        assert a["top"][0]["label"] == b["top"][0]["label"] and abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-4
    CliRunner().invoke(main, ["predict", str(tiny_bundle), imgs[0], "--runtime", "onnx"], catch_exceptions=False)
    assert onnx_file.stat().st_mtime_ns == made  # reused, not exported again
