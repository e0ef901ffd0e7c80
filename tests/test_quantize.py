"""The int8 gate: a good calibration passes and predicts like fp32; a broken one is refused and fp32 is kept."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("int8")
    data = make_class_folders(tmp / "colours", n=40)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp / "c"), tmp / "runs", "--mode", "finetune",
                                  "--epochs", "4", "--lr", "0.01", "--batch-size", "8", "--name", "q")])
    assert r.exit_code == 0, r.output
    return tmp / "runs" / "q"


def test_good_calibration_is_kept_and_predicts_like_fp32(run_dir: Path) -> None:
    r = CliRunner().invoke(main, ["export", str(run_dir), "--int8"])
    assert r.exit_code == 0, r.output
    int8 = run_dir / "model" / "export" / "model.int8.onnx"
    assert int8.is_file() and "validation accuracy" in r.output
    import onnx
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantised
    image = next((run_dir.parent.parent / "colours" / "red").glob("*.png"))
    preds = {}
    for runtime in ("torch", "onnx-int8"):
        r = CliRunner().invoke(main, ["predict", str(run_dir), str(image), "--runtime", runtime, "--json"])
        assert r.exit_code == 0, r.output
        preds[runtime] = r.output
    import json
    a, b = (json.loads(preds[k])[0]["top"] for k in ("torch", "onnx-int8"))
    assert a[0]["label"] == b[0]["label"] and abs(a[0]["prob"] - b[0]["prob"]) < 0.05


def test_an_int8_that_loses_accuracy_is_refused_and_fp32_kept(run_dir: Path, tmp_path: Path) -> None:
    """int8's classic failure: one activation channel with a huge range (an outlier) sets the per-tensor scale, and
    the informative channels round to nothing. The fp32 model ignores that channel, so only int8 loses accuracy."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "model", broken, ignore=shutil.ignore_patterns("export"))
    weights = load_file(str(broken / "model.safetensors"))
    weights["body.4.bias"][0] = 1000.0       # BatchNorm of the last conv: channel 0 is always ~1000 after ReLU
    weights["head.weight"][:, 0] = 0.0       # and the head does not look at it
    save_file(weights, str(broken / "model.safetensors"))
    out = tmp_path / "exp"
    r = CliRunner().invoke(main, ["export", str(broken), "--int8", "--out", str(out)])
    assert r.exit_code == 2 and "int8 refused" in r.output and "kept the fp32 export" in r.output, r.output
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    report = json.loads((out / "parity-int8.json").read_text())
    assert report["fp32_acc"] >= 0.9 and report["fp32_acc"] - report["int8_acc"] > 0.01 and not report["accepted"]
