"""Annotation readers, bad-annotation reporting, augmentation that moves boxes and masks, and the metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.scenes import write_coco, write_createml, write_labelme, write_masks, write_voc, write_yolo
from tunevision.data.annotated import check_boxes, mask_boxes, seeded_split
from tunevision.data.annotations import read_scene_data, sniff_format
from tunevision.core.errors import TunevisionError
from tunevision.data.scenes import decode_scene, decode_scenes, detection_example, resize_shorter, segmentation_example
from tunevision.scene.evaluate import confusion_matrix, detection_scores, segmentation_scores

WRITERS = {"voc": write_voc, "coco": write_coco, "yolo": write_yolo, "masks": write_masks, "labelme": write_labelme,
           "createml": write_createml}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_reads_the_same_boxes(tmp_path: Path, fmt: str) -> None:
    data = read_scene_data(WRITERS[fmt](tmp_path / fmt))
    reference = read_scene_data(write_voc(tmp_path / "ref"))
    assert sniff_format(tmp_path / fmt) == fmt and data.format == fmt
    assert len(data.items) == 8 and data.problems == []
    for a, b in zip(sorted(data.items, key=lambda i: i.image.stem), sorted(reference.items, key=lambda i: i.image.stem)):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert (a.labels == 0).all()
    assert (data.items[0].mask is not None) == (fmt == "masks")


def test_a_folder_of_class_subfolders_is_not_taken_for_annotations(colour_folders: Path) -> None:
    assert sniff_format(colour_folders) is None
    with pytest.raises(TunevisionError, match="no annotations found"):
        read_scene_data(colour_folders)


def _voc(root: Path, name: str, box: str, cls: str = "box", image: str | None = "im0.jpg") -> None:
    (root / "annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{image or name + '.jpg'}</filename><size><width>96</width><height>80</height></size>"
        f"<object><name>{cls}</name><bndbox>{box}</bndbox></object></annotation>")


def test_bad_annotations_are_listed_by_file_with_their_reason_and_left_out(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc", n=3)
    (root / "classes.txt").write_text("box\n")
    box = "<xmin>{}</xmin><ymin>10</ymin><xmax>{}</xmax><ymax>40</ymax>"
    _voc(root, "outside", box.format(10, 300))
    _voc(root, "flat", box.format(30, 30))
    _voc(root, "unknown", box.format(10, 40), cls="zebra")
    _voc(root, "missing", box.format(10, 40), image="nowhere.jpg")
    (root / "annotations" / "broken.xml").write_text("<annotation><object>")
    data = read_scene_data(root)
    reasons = {Path(f).stem: r for f, r in data.problems}
    assert "outside the 96x80 image" in reasons["outside"]
    assert "zero area" in reasons["flat"]
    assert "unknown class 'zebra'" in reasons["unknown"]
    assert "nowhere.jpg not found" in reasons["missing"]
    assert "unreadable VOC XML" in reasons["broken"]
    assert len(data.items) == 3  # training never meets the five bad ones


def test_unreadable_coco_json_is_one_clear_error(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", n=2)
    (root / "annotations.json").write_text('{"images": [')
    with pytest.raises(TunevisionError, match="annotations.json: unreadable COCO JSON"):
        read_scene_data(root)


def test_coco_unknown_category_and_yolo_bad_class_are_reported(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", n=3)
    coco = json.loads((root / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    (root / "annotations.json").write_text(json.dumps(coco))
    assert any("unknown category id 99" in r for _, r in read_scene_data(root).problems)
    yolo = write_yolo(tmp_path / "yolo", n=3)
    (yolo / "labels" / "im0.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    problems = read_scene_data(yolo).problems
    assert problems and "unknown class 3" in problems[0][1] and problems[0][0].endswith("im0.txt")


def test_boxes_a_pixel_or_two_past_the_border_are_clipped_not_refused() -> None:
    boxes, reason = check_boxes(np.array([[-1.0, 0, 97, 81]]), (96, 80))
    assert reason == "" and boxes.tolist() == [[0, 0, 96, 80]]


def test_mask_boxes_are_the_extent_of_each_instance() -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:7], mask[6:9, 1:2] = 1, 2
    assert mask_boxes(mask).tolist() == [[3, 2, 7, 5], [1, 6, 2, 9]]


def test_seeded_split_is_fixed_and_disjoint() -> None:
    a, b = seeded_split(50, 0.2, 0), seeded_split(50, 0.2, 0)
    assert a == b and len(a[1]) == 10 and not set(a[0]) & set(a[1])
    assert seeded_split(50, 0.2, 1) != a


def test_a_box_and_its_mask_move_with_a_flip(tmp_path: Path) -> None:
    from torchvision.transforms import v2
    item = read_scene_data(write_masks(tmp_path / "m", n=1)).items[0]
    sample = decode_scene(item, 80)
    image, target = detection_example(sample, v2.RandomHorizontalFlip(p=1.0))
    w = sample.image.shape[-1]
    expected = sample.boxes.clone()
    expected[:, [0, 2]] = w - sample.boxes[:, [2, 0]]
    torch.testing.assert_close(target["boxes"], expected)
    assert torch.equal(target["masks"], sample.masks.flip(-1))
    torch.testing.assert_close(image, sample.image.flip(-1).float() / 255)
    flipped, mask = segmentation_example(sample, v2.RandomHorizontalFlip(p=1.0))
    assert torch.equal(mask, sample.semantic().flip(-1))


def test_decoding_scales_boxes_and_masks_with_the_image(tmp_path: Path) -> None:
    item = read_scene_data(write_masks(tmp_path / "m", n=1)).items[0]
    sample = decode_scene(item, 160)  # 96x80 -> 192x160
    assert sample.image.shape[1:] == (160, 192) and sample.masks.shape[1:] == (160, 192)
    torch.testing.assert_close(sample.boxes, torch.from_numpy(item.boxes) * 2)
    assert resize_shorter(Image.new("RGB", (300, 200)), 100)[0].size == (150, 100)


def test_detection_map_is_one_for_exact_boxes_and_drops_for_misplaced_ones() -> None:
    target = [{"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1])}]
    exact = [{"boxes": torch.tensor([[10.0, 10, 50, 50]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    off = [{"boxes": torch.tensor([[30.0, 30, 70, 70]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    good = detection_scores(exact, target, ["box"], curves=True)
    assert good.map == pytest.approx(1.0) and good.map_50 == pytest.approx(1.0)
    assert good.per_class_ap50["box"] == pytest.approx(1.0) and len(good.pr_curves["box"]) == 101
    assert detection_scores(off, target, ["box"]).map_50 == pytest.approx(0.0)
    # a class predicted but in no validation image has no AP (COCO leaves it out of the mean), not 0
    stray = [{"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 2])}]
    scores = detection_scores(stray, target, ["box", "cow"], curves=True)
    assert scores.map == pytest.approx(1.0) and scores.per_class_ap == {"box": 1.0, "cow": None}
    assert "cow" not in scores.per_class_ap50 and "cow" not in scores.pr_curves


def test_miou_from_the_confusion_matrix_ignores_padding() -> None:
    true = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]])
    cm = confusion_matrix(pred, true, 2)
    assert cm.tolist() == [[3, 1], [0, 3]]
    scores = segmentation_scores(cm, ["thing"])
    assert scores.per_class_iou == {"background": 0.75, "thing": 0.75}
    assert scores.miou == pytest.approx(0.75) and scores.pixel_acc == pytest.approx(6 / 7)
    # a class in neither the truth nor the predictions (VOC's cows on images of people) has no IoU to average
    absent = segmentation_scores(confusion_matrix(pred, true, 3), ["thing", "cow"])
    assert absent.per_class_iou == {"background": 0.75, "thing": 0.75, "cow": None}
    assert absent.miou == pytest.approx(0.75)
    wrong = segmentation_scores(confusion_matrix(torch.where(pred == 1, 2, pred), true, 3), ["thing", "cow"])
    assert wrong.per_class_iou["cow"] == 0.0 and wrong.per_class_iou["thing"] == 0.0  # predicted cows count


def test_train_and_valid_folders_are_the_split_and_share_the_training_classes(tmp_path: Path) -> None:
    from tunevision.data.annotated import split_indices
    write_coco(tmp_path / "set" / "train", n=6)
    write_coco(tmp_path / "set" / "valid", n=3, seed=1)
    assert sniff_format(tmp_path / "set") == "coco"
    data = read_scene_data(tmp_path / "set")
    train, val = split_indices(data.items, 0.5, 0)
    assert len(train) == 6 and len(val) == 3 and data.classes == ["box"]
    assert all("valid" in str(data.items[i].image) for i in val)


def test_coco_crowd_regions_are_not_trained_on(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", n=2)
    coco = json.loads((root / "annotations.json").read_text())
    before = sum(len(it.boxes) for it in read_scene_data(root).items)
    coco["annotations"].append({"id": 99, "image_id": 1, "category_id": 7, "bbox": [0, 0, 90, 70], "iscrowd": 1})
    (root / "annotations.json").write_text(json.dumps(coco))
    assert sum(len(it.boxes) for it in read_scene_data(root).items) == before


def test_labelme_and_createml_problems_are_listed_or_one_line(tmp_path: Path) -> None:
    root = write_labelme(tmp_path / "labelme", n=3)
    (root / "json" / "im0.json").write_text('{"shapes": [{"label": "box", "points": [[1, 2]', encoding="utf-8")
    (root / "json" / "im1.json").write_text(json.dumps({"shapes": [], "imagePath": "gone.jpg"}))
    data = read_scene_data(root)
    assert len(data.items) == 1
    reasons = dict(data.problems)
    assert "unreadable LabelMe JSON" in reasons[str(root / "json" / "im0.json")]
    assert "gone.jpg not found" in reasons[str(root / "json" / "im1.json")]
    cm = write_createml(tmp_path / "createml", n=2)
    (cm / "_annotations.createml.json").write_text('[{"image": "im0.jpg", "annotations": [')
    with pytest.raises(TunevisionError, match="unreadable Create ML JSON"):
        read_scene_data(cm)


def test_polygon_outlines_give_the_masks_a_mask_file_would(tmp_path: Path) -> None:
    """COCO's segmentation polygons (LabelMe's shapes, YOLO's segment lines) are masks for segmentation and
    Mask R-CNN: drawn at the decoded size, they match the mask files of the same objects."""
    from tunevision.data.annotated import outlines_or_none
    masks = {it.image.stem: it for it in read_scene_data(write_masks(tmp_path / "m")).items}
    coco = read_scene_data(write_coco(tmp_path / "c", outlines=True))
    assert all(it.has_masks and it.mask is None for it in coco.items)
    for it in coco.items:
        ref = masks[it.image.stem]
        assert torch.equal(decode_scene(it, 80).masks, decode_scene(ref, 80).masks)  # native size: pixel for pixel
        big, big_ref = decode_scene(it, 160).semantic() > 0, decode_scene(ref, 160).semantic() > 0
        assert (big & big_ref).sum() / (big | big_ref).sum() > 0.95
    assert not any(it.has_masks for it in read_scene_data(write_coco(tmp_path / "boxes")).items)
    assert all(it.has_masks for it in read_scene_data(write_labelme(tmp_path / "lm")).items)
    assert outlines_or_none([[np.zeros((3, 2))], []]) is None  # an object without one: the image has no masks


def test_yolo_segment_lines_are_outlines(tmp_path: Path) -> None:
    root = write_yolo(tmp_path / "y", n=1)
    (root / "labels" / "im0.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n")
    item = read_scene_data(root).items[0]
    np.testing.assert_allclose(item.boxes, [[9.6, 8.0, 48.0, 40.0]], atol=1e-4)
    mask = decode_scene(item, 80).masks[0]
    assert mask[10:40, 10:48].all() and mask.sum() < 40 * 34


def test_a_box_table_read_for_its_images_gives_each_image_once(tmp_path: Path) -> None:
    """The audit of a box table (a row per box) reads each photo once, with its objects' classes."""
    from tunevision.data.discover import discover
    rng = np.random.default_rng(0)
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.jpg")
        rows.append(f"im{i}.jpg,96,80,cat,1,1,40,40")
        if i % 2:
            rows.append(f"im{i}.jpg,96,80,dog,50,30,90,70")
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    ds = discover(str(tmp_path / "boxes.csv"), multilabel=True)
    samples = ds.train + ds.val
    assert len(samples) == 6 and len({s.path for s in samples}) == 6
    assert sorted(len(s.labels) for s in samples) == [1, 1, 1, 2, 2, 2]


def test_coco_run_length_masks_are_the_masks_themselves(tmp_path: Path, monkeypatch) -> None:
    """COCO's RLE segmentations (compressed strings and uncompressed runs) give the very masks a mask file does, at
    any decode size; without pycocotools their objects have no outline and the images give boxes only."""
    coco_mask = pytest.importorskip("pycocotools.mask")
    masks = read_scene_data(write_masks(tmp_path / "m")).items
    images, anns = [], []
    for i, it in enumerate(masks):
        ids = np.asarray(Image.open(it.mask))
        images.append({"id": i, "file_name": it.image.name, "width": ids.shape[1], "height": ids.shape[0]})
        for k, (box, label) in enumerate(zip(it.boxes, it.labels)):
            m = np.asfortranarray((ids == k + 1).astype(np.uint8))
            rle = coco_mask.encode(m)
            if k % 2:  # uncompressed: the runs of 0s and 1s in column order, as COCO writes crowds
                flat = m.flatten(order="F")
                edges = np.flatnonzero(np.diff(flat)) + 1
                runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
                rle = {"size": list(m.shape), "counts": ([0] if flat[0] else []) + runs}
            else:
                rle["counts"] = rle["counts"].decode()
            x0, y0, x1, y1 = box.tolist()
            anns.append({"id": len(anns), "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": rle})
    root = tmp_path / "m"
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 1, "name": "object"}]}))
    coco = {it.image.name: it for it in read_scene_data(root, "coco").items}
    assert len(coco) == len(masks) and all(it.has_masks and it.mask is None for it in coco.values())
    for ref in masks:
        for size in (80, 160, 56):
            assert torch.equal(decode_scene(coco[ref.image.name], size).masks, decode_scene(ref, size).masks)
    anns[0]["segmentation"] = {"size": [80, 96], "counts": "@@@@"}  # damaged: that image is left out, with why
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 1, "name": "object"}]}))
    samples, problems = decode_scenes(read_scene_data(root, "coco").items, 80, workers=1)
    assert len(samples) == len(masks) - 1 and "unreadable COCO run-length mask" in problems[0][1]
    monkeypatch.setitem(__import__("sys").modules, "pycocotools", None)
    monkeypatch.setitem(__import__("sys").modules, "pycocotools.mask", None)
    assert not any(it.has_masks for it in read_scene_data(root, "coco").items)


def test_coco_json_with_a_byte_order_mark(tmp_path: Path) -> None:
    """A COCO file saved with a UTF-8 byte-order mark (as Windows tools write) is still COCO, read whole."""
    root = write_coco(tmp_path / "c", n=3)
    (root / "annotations.json").write_bytes(b"\xef\xbb\xbf" + (root / "annotations.json").read_bytes())
    assert sniff_format(root) == "coco" and len(read_scene_data(root).items) == 3
