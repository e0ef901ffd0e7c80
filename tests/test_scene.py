"""Detection and segmentation pipelines with randomly initialised torchvision models on real photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tunevision.cli.main import main
from tunevision.models.hub import (DETECTORS, SEGMENTERS, Detection, class_map_image, detect, draw_detections,
                              load_scene_model, overlay, palette, pixel_fractions, segment)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data
    path = tmp_path_factory.mktemp("p") / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((256, 256)).save(path)
    return path


def test_detector_outputs_and_drawing(photo: Path) -> None:
    torch.manual_seed(0)
    model, cats, _ = load_scene_model("fasterrcnn_mobilenet_v3_large_fpn", DETECTORS, pretrained=False)
    assert cats[1] == "person" and len(cats) == 91
    model.roi_heads.score_thresh = 0.0  # random weights score every class near 1/91: keep them all
    found = detect(model, cats, Image.open(photo), threshold=0.0)
    assert found and all(len(d.box) == 4 and 0 <= d.score <= 1 and d.label in cats for d in found)
    im = Image.new("RGB", (100, 80), (0, 0, 0))
    drawn = np.asarray(draw_detections(im, [Detection("person", 0.9, (10, 20, 60, 70))]))
    assert drawn[20, 30, 0] > 200 and drawn[45, 10, 0] > 200  # top and left edges are red
    assert drawn[45, 35].sum() == 0                           # the inside is untouched


def test_weights_file_round_trip(tmp_path: Path, photo: Path) -> None:
    torch.manual_seed(1)
    model, _, entry = load_scene_model("lraspp_mobilenet_v3_large", SEGMENTERS, pretrained=False)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again, _, _ = load_scene_model("lraspp_mobilenet_v3_large", SEGMENTERS, weights=str(tmp_path / "w.pth"))
    a, b = segment(model, entry, Image.open(photo)), segment(again, entry, Image.open(photo))
    assert a.shape == (256, 256) and np.array_equal(a, b)


def test_palette_image_has_one_colour_per_class() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 15  # person in VOC
    mask[5:, :5] = 3
    im = class_map_image(mask, 21)
    rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len({tuple(c) for c in rgb}) == 3 and len({tuple(c) for c in palette(21)}) == 21
    assert pixel_fractions(mask, [str(i) for i in range(21)]) == {"0": 0.25, "3": 0.25, "15": 0.5}
    over = np.asarray(overlay(Image.new("RGB", (10, 10), (0, 0, 0)), mask, 21))
    assert over[0, 0].sum() > 0 and over[9, 9].sum() == 0


def test_cli_detect_and_segment_with_local_weights(tmp_path: Path, photo: Path) -> None:
    torch.manual_seed(2)
    det, _, _ = load_scene_model("ssdlite320_mobilenet_v3_large", DETECTORS, pretrained=False)
    torch.save(det.state_dict(), tmp_path / "det.pth")
    r = CliRunner().invoke(main, ["detect", str(photo), "--model", "ssdlite320_mobilenet_v3_large", "--weights",
                                  str(tmp_path / "det.pth"), "--out", str(tmp_path / "d"), "--json",
                                  "--threshold", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert Image.open(json.loads(r.output)[str(photo)]["output"]).size == (256, 256)
    seg, _, _ = load_scene_model("lraspp_mobilenet_v3_large", SEGMENTERS, pretrained=False)
    torch.save(seg.state_dict(), tmp_path / "seg.pth")
    r = CliRunner().invoke(main, ["segment", str(photo), "--model", "lraspp_mobilenet_v3_large", "--weights",
                                  str(tmp_path / "seg.pth"), "--out", str(tmp_path / "s"), "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)[str(photo)]
    assert abs(sum(out["fractions"].values()) - 1) < 1e-6 and Path(out["overlay"]).is_file()


def test_offline_without_weights_is_a_clear_error(photo: Path) -> None:
    r = CliRunner().invoke(main, ["segment", str(photo), "--model", "fcn_resnet50"])
    assert r.exit_code == 2 and "--weights" in r.output


def test_cli_segment_text_output_lists_fractions_and_errors(tmp_path: Path, photo: Path) -> None:
    seg, _, _ = load_scene_model("lraspp_mobilenet_v3_large", SEGMENTERS, pretrained=False)
    torch.save(seg.state_dict(), tmp_path / "seg.pth")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    r = CliRunner().invoke(main, ["segment", str(photo), str(tmp_path / "bad.jpg"), "--model",
                                  "lraspp_mobilenet_v3_large", "--weights", str(tmp_path / "seg.pth"), "--out",
                                  str(tmp_path / "s")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    first = lines.index(next(line for line in lines if line.startswith(f"{photo}: ")))
    assert lines[first].endswith(".overlay.png") and lines[first + 1].startswith("  ") and "%" in lines[first + 1]
    assert any(line.startswith(f"{tmp_path / 'bad.jpg'}: ") and "image" in line for line in lines)
