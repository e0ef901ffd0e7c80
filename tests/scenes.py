"""Tiny synthetic detection/segmentation sets: noisy images with bright rectangles, written in each format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def draw(rng: np.random.Generator, size=(96, 80), n_max=2):
    """(uint8 image, instance mask, boxes): 1..n_max rectangles, instance k has pixel value k in the mask."""
    w, h = size
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    boxes = []
    for k in range(1, rng.integers(1, n_max + 1) + 1):
        bw, bh = rng.integers(20, 40), rng.integers(20, 40)
        x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
        if mask[y:y + bh, x:x + bw].any():
            continue
        image[y:y + bh, x:x + bw] = (220, 40, 40)
        mask[y:y + bh, x:x + bw] = len(boxes) + 1
        boxes.append([int(x), int(y), int(x + bw), int(y + bh)])
    return image, mask, boxes


def write_voc(root: Path, n: int = 8, seed: int = 0, cls: str = "box") -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(n):
        image, _, boxes = draw(rng)
        Image.fromarray(image).save(root / "images" / f"im{i}.jpg", quality=95)
        objects = "".join(f"<object><name>{cls}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}"
                          f"</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
        (root / "annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>96</width><height>80</height></size>"
            f"{objects}</annotation>")
    return root


def write_coco(root: Path, n: int = 8, seed: int = 0, outlines: bool = False) -> Path:
    """`outlines`: each object's polygon too, covering the pixels its mask in `write_masks` does."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        image, _, boxes = draw(rng)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 96, "height": 80})
        anns += [{"id": len(anns) + 1, "image_id": i + 1, "category_id": 7, "bbox": [b[0], b[1], b[2] - b[0],
                                                                                      b[3] - b[1]]} for b in boxes]
        if outlines:  # pixels x0..x1 - 1 are the object's: the polygon's corners lie on its last pixels
            for a, (x0, y0, x1, y1) in zip(anns[len(anns) - len(boxes):], boxes):
                a["segmentation"] = [[x0, y0, x1 - 1, y0, x1 - 1, y1 - 1, x0, y1 - 1]]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 7, "name": "box"}]}))
    return root


def write_yolo(root: Path, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("box\n")
    for i in range(n):
        image, _, boxes = draw(rng)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        (root / "labels" / f"im{i}.txt").write_text("".join(
            f"0 {(b[0] + b[2]) / 2 / 96} {(b[1] + b[3]) / 2 / 80} {(b[2] - b[0]) / 96} {(b[3] - b[1]) / 80}\n"
            for b in boxes))
    return root


def write_masks(root: Path, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(n):
        image, mask, _ = draw(rng)
        Image.fromarray(image).save(root / "PNGImages" / f"im{i}.png")
        Image.fromarray(mask).save(root / "PedMasks" / f"im{i}_mask.png")
    return root


def write_class_masks(root: Path, n: int = 8, seed: int = 0, names: str | None = "background\ncat\ndog\n",
                      mask_dir: str = "masks") -> Path:
    """A semantic set: rectangle k of each image is class k (1 cat, 2 dog), outlined in void (255) as in VOC."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / mask_dir).mkdir()
    for i in range(n):
        image, mask, boxes = draw(rng, n_max=2)
        for x1, y1, x2, y2 in boxes:
            mask[y1, x1:x2] = 255
        Image.fromarray(image).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(mask).save(root / mask_dir / f"im{i}.png")
    if names is not None:
        (root / "classes.txt").write_text(names)
    return root


def write_labelme(root: Path, n: int = 8, seed: int = 0) -> Path:
    """LabelMe as its tool saves: a JSON beside each image, rectangles and polygons, imagePath relative to it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "json").mkdir()
    for i in range(n):
        image, _, boxes = draw(rng)
        Image.fromarray(image).save(root / "images" / f"im{i}.jpg", quality=95)
        shapes = [{"label": "box", "shape_type": "rectangle", "points": [[b[2], b[3]], [b[0], b[1]]]} if k % 2 else
                  {"label": "box", "shape_type": "polygon",
                   "points": [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]} for k, b in enumerate(boxes)]
        shapes.append({"label": "box", "shape_type": "point", "points": [[5, 5]]})  # no area: no box
        (root / "json" / f"im{i}.json").write_text(json.dumps(
            {"version": "5.4.1", "shapes": shapes, "imagePath": f"..\\images\\im{i}.jpg", "imageData": None,
             "imageHeight": 80, "imageWidth": 96}))
    return root


def write_createml(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Apple's Create ML, as Roboflow exports it: one list beside the images, boxes as centre and size."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    records = []
    for i in range(n):
        image, _, boxes = draw(rng)
        Image.fromarray(image).save(root / f"im{i}.jpg", quality=95)
        records.append({"image": f"im{i}.jpg", "annotations": [
            {"label": "box", "coordinates": {"x": (b[0] + b[2]) / 2, "y": (b[1] + b[3]) / 2, "width": b[2] - b[0],
                                             "height": b[3] - b[1]}} for b in boxes]})
    (root / "_annotations.createml.json").write_text(json.dumps(records))
    return root
