"""A detector fine-tuned for a few steps from the real Lite0 ImageNet weights on real annotated photos."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import tunevision as tv
from tests.conftest import SHARED

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (SHARED / "pennfudan").is_dir(), reason="../shared/datasets not present")]


def test_pennfudan_masks_train_a_detector_that_predicts_boxes_on_a_photo(tmp_path: Path) -> None:
    model = tv.fit(str(SHARED / "pennfudan"), task="detect", epochs=1, image_size=224, val_fraction=0.3,
                   out=str(tmp_path), quiet=True, device="cpu")
    summary = (model.run_dir / "summary.json").read_text()
    assert '"train_images": 119' in summary and '"val_images": 51' in summary
    assert 0.0 <= model.scores.map_50 <= 1.0
    photo = SHARED / "pennfudan" / "PNGImages" / "FudanPed00001.png"
    found = model.predict(str(photo), threshold=0.0)
    width, height = Image.open(photo).size
    assert found.error == "" and found.detections
    assert all(0 <= d.box[0] < d.box[2] <= width + 1 and 0 <= d.box[1] < d.box[3] <= height + 1
               for d in found.detections)
    assert found.plot().size == (width, height)


def test_raccoon_voc_is_found_and_read_whole() -> None:
    from tunevision.data.annotations import read_scene_data
    data = read_scene_data(SHARED / "raccoon")
    assert data.format == "voc" and data.classes == ["raccoon"] and len(data.items) == 200
    assert sum(len(it.boxes) for it in data.items) == 217 and data.problems == []
