"""Boxes and masks on disk: Pascal VOC XML, COCO JSON, YOLO txt and instance-mask folders, read into one form.

Every reader returns `Annotated` items (an image, its boxes in pixels, their class indices, optionally an
instance-mask file) and a list of problems, one `(file, reason)` per image left out: a box outside the image,
zero area, an unknown class, a missing image, an unreadable XML/JSON. Training never meets a left-out image.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SLACK = 2.0  # pixels a box may pass the image border by (VOC's 1-based corners, rounding) before it counts as bad


@dataclass
class Annotated:
    image: Path
    boxes: np.ndarray            # (N, 4) float32, x1 y1 x2 y2 in pixels
    labels: np.ndarray           # (N,) int64, index into the class names
    mask: Path | None = None     # instance ids: pixel value k = object k (k-th box), 0 = background
    split: str = ""              # "train" / "val" when the data comes split, else "" (a seeded split is drawn)


@dataclass
class SceneData:
    items: list[Annotated]
    classes: list[str]
    format: str
    problems: list[tuple[str, str]] = field(default_factory=list)


FORMATS: Registry[Callable[[Path], SceneData]] = Registry("annotation format")
SENSES: list[tuple[str, Callable[[Path], bool]]] = []  # (format, "does this folder look like it?") in order


def _format(name: str, looks_like: Callable[[Path], bool]):
    def add(fn):
        SENSES.append((name, looks_like))
        return FORMATS.register(name)(fn)
    return add


def sniff_format(root: Path) -> str | None:
    """The annotation format of a folder (or COCO JSON file), or None when it holds none of them."""
    folders = split_folders(root)
    if folders:
        return sniff_format(folders["train"])
    return next((name for name, looks in SENSES if looks(root)), None)


SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val"}


def split_folders(root: Path) -> dict[str, Path]:
    """{'train': ..., 'val': ...} when the data comes as train/ + val/ (or valid/, validation/) folders of one
    annotation format (Roboflow's and many other exports), else {}."""
    if not root.is_dir():
        return {}
    found = {SPLITS[p.name.lower()]: p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in SPLITS}
    return found if set(found) == {"train", "val"} and sniff_format(found["train"]) else {}


def read_scene_data(root: str | Path, fmt: str = "") -> SceneData:
    root = Path(root).expanduser()
    if not root.exists():
        raise TunevisionError(f"{root}: not found")
    folders = split_folders(root)
    if folders:
        return _read_split(folders)
    fmt = fmt or sniff_format(root) or ""
    if not fmt:
        raise TunevisionError(f"{root}: no annotations found; detection/segmentation data is a VOC folder "
                              "(images/ + annotations/*.xml), a COCO JSON, a YOLO folder (images/ + labels/ + "
                              "classes.txt) or images + instance masks (PNGImages/ + PedMasks/)")
    data = FORMATS.get(fmt)(root)
    if not data.items:
        raise TunevisionError(f"{root}: no usable annotated image ({len(data.problems)} left out, e.g. "
                              f"{data.problems[0][0]}: {data.problems[0][1]})" if data.problems else
                              f"{root}: no annotated image found")
    return data


def _read_split(folders: dict[str, Path]) -> SceneData:
    """train/ and val/ read alike; the validation labels are renamed into the training classes."""
    train = read_scene_data(folders["train"])
    val = read_scene_data(folders["val"], train.format)
    classes, problems = list(train.classes), train.problems + val.problems
    items = [dataclass_replace(it, split="train") for it in train.items]
    for it in val.items:
        names = [val.classes[k] for k in it.labels]
        unknown = [n for n in names if n not in classes]
        if unknown:
            problems.append((str(it.image), f"class {unknown[0]!r} is not among the training classes"))
            continue
        items.append(dataclass_replace(it, labels=np.asarray([classes.index(n) for n in names], np.int64),
                                       split="val"))
    return SceneData(items, classes, train.format, problems)


def _subdir(root: Path, *names: str) -> Path | None:
    if not root.is_dir():
        return None
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((lower[n] for n in names if n in lower), None)


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}


def check_boxes(boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Boxes clipped to the image when they pass it by at most SLACK pixels; else a reason the image is bad."""
    w, h = size
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), ""
    if not np.isfinite(boxes).all():
        return boxes, "a box coordinate is not a number"
    outside = (boxes[:, 0] < -SLACK) | (boxes[:, 1] < -SLACK) | (boxes[:, 2] > w + SLACK) | (boxes[:, 3] > h + SLACK)
    if outside.any():
        return boxes, f"box {boxes[outside][0].round(1).tolist()} lies outside the {w}x{h} image"
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    flat = (boxes[:, 2] - boxes[:, 0] < 1) | (boxes[:, 3] - boxes[:, 1] < 1)
    if flat.any():
        return boxes, f"box {boxes[flat][0].round(1).tolist()} has zero area"
    return boxes, ""


def _add(items: list[Annotated], problems: list, image: Path, boxes: list, labels: list, source: Path,
         size: tuple[int, int] | None = None, mask: Path | None = None) -> None:
    """One annotated image, checked: appended to `items`, or its reason to `problems`."""
    if not image.is_file():
        problems.append((str(source), f"image {image.name} not found in {image.parent}"))
        return
    try:
        size = size if size and min(size) > 0 else Image.open(image).size  # header only
    except Exception as e:
        problems.append((str(image), f"unreadable image ({type(e).__name__})"))
        return
    checked, reason = check_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), size)
    if reason:
        problems.append((str(source), reason))
        return
    items.append(Annotated(image, checked, np.asarray(labels, dtype=np.int64), mask))


def _class_index(classes: list[str], name: str, fixed: bool) -> int | None:
    if name not in classes:
        if fixed:
            return None
        classes.append(name)
    return classes.index(name)


def _read_names(root: Path) -> list[str]:
    """classes.txt (one per line), or the `names` of a YOLO data.yaml; empty when there is neither."""
    for p in (root / "classes.txt", root / "labels" / "classes.txt", root / "obj.names"):
        if p.is_file():
            return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    for p in (root / "data.yaml", root / "dataset.yaml"):
        if p.is_file():
            import yaml
            names = (yaml.safe_load(p.read_text()) or {}).get("names", [])
            return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return []


# --- Pascal VOC: one XML per image --------------------------------------------------------------------------

def _voc_dirs(root: Path) -> tuple[Path, Path] | None:
    ann = _subdir(root, "annotations", "annotation", "xml")
    img = _subdir(root, "images", "jpegimages", "img")
    if ann and img and any(ann.glob("*.xml")):
        return ann, img
    return (root, root) if root.is_dir() and any(root.glob("*.xml")) else None


@_format("voc", lambda root: _voc_dirs(root) is not None)
def read_voc(root: Path) -> SceneData:
    ann_dir, img_dir = _voc_dirs(root)
    images, fixed = _images(img_dir), _read_names(root)
    classes, items, problems = list(fixed), [], []
    for xml in sorted(ann_dir.glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
            boxes, labels, unknown = [], [], ""
            for obj in tree.iter("object"):
                name = (obj.findtext("name") or "").strip()
                bb = obj.find("bndbox")
                boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                index = _class_index(classes, name, bool(fixed))
                unknown = unknown or ("" if index is not None else name)
                labels.append(index)
            size = (int(float(tree.findtext("size/width") or 0)), int(float(tree.findtext("size/height") or 0)))
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            problems.append((str(xml), f"unreadable VOC XML ({type(e).__name__}: {str(e)[:60]})"))
            continue
        if unknown:
            problems.append((str(xml), f"unknown class {unknown!r} (not in classes.txt)"))
            continue
        filename = Path(tree.findtext("filename") or xml.stem)
        image = images.get(filename.stem) or images.get(xml.stem) or img_dir / filename.name
        _add(items, problems, image, boxes, labels, xml, size)
    return SceneData(items, classes, "voc", problems)


# --- COCO: one JSON for many images ---------------------------------------------------------------------------

def _coco_file(root: Path) -> Path | None:
    if root.is_file() and root.suffix == ".json":
        return root
    if not root.is_dir():
        return None
    found = sorted(p for folder in (root, root / "annotations") if folder.is_dir() for p in folder.glob("*.json"))
    return next((p for p in found if "coco" in p.name or "instances" in p.name or "annotations" in p.name), None)


@_format("coco", lambda root: _coco_file(root) is not None)
def read_coco(root: Path) -> SceneData:
    path = _coco_file(root)
    try:
        coco = json.loads(path.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        records = {int(im["id"]): im for im in coco["images"]}
        annotations = coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TunevisionError(f"{path}: unreadable COCO JSON ({type(e).__name__}: {str(e)[:80]}); it needs "
                              "'images', 'annotations' and 'categories'") from None
    classes = [categories[k] for k in sorted(categories)]
    index = {k: i for i, k in enumerate(sorted(categories))}
    per_image: dict[int, list[dict]] = {k: [] for k in records}
    items, problems = [], []
    for a in annotations:
        if not a.get("iscrowd", 0):  # a crowd region is one box over many objects: COCO's evaluation ignores it too
            per_image.setdefault(int(a.get("image_id", -1)), []).append(a)
    folder = next((d for d in (path.parent / "images", path.parent.parent / "images", path.parent) if d.is_dir()))
    for image_id, anns in per_image.items():
        record = records.get(image_id)
        if record is None:
            problems.append((str(path), f"annotation for unknown image id {image_id}"))
            continue
        bad = next((a for a in anns if int(a.get("category_id", -1)) not in index), None)
        if bad is not None:
            problems.append((f"{path}: {record['file_name']}", f"unknown category id {bad.get('category_id')}"))
            continue
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]  # COCO boxes are x, y, w, h
        _add(items, problems, folder / record["file_name"], boxes, [index[int(a["category_id"])] for a in anns],
             Path(f"{path}: {record['file_name']}"), (int(record.get("width", 0)), int(record.get("height", 0))))
    return SceneData(items, classes, "coco", problems)


# --- YOLO: images/ + labels/ with one "class cx cy w h" line per box, normalised ---------------------------------

def _yolo_dirs(root: Path) -> tuple[Path, Path] | None:
    img, lab = _subdir(root, "images"), _subdir(root, "labels")
    return (img, lab) if img and lab and any(lab.rglob("*.txt")) else None


@_format("yolo", lambda root: _yolo_dirs(root) is not None)
def read_yolo(root: Path) -> SceneData:
    img_dir, lab_dir = _yolo_dirs(root)
    classes = _read_names(root)
    if not classes:
        raise TunevisionError(f"{root}: YOLO labels need class names; add classes.txt (one name per line) or a "
                              "data.yaml with 'names'")
    items, problems = [], []
    for image in sorted(_images(img_dir).values()):
        label_file = lab_dir / image.relative_to(img_dir).with_suffix(".txt")
        try:
            rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()] \
                if label_file.is_file() else []  # no label file: an image with no objects (YOLO's convention)
            values = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        except (OSError, ValueError) as e:
            problems.append((str(label_file), f"unreadable YOLO label ({type(e).__name__}); each line is "
                                              "'class cx cy w h'"))
            continue
        cls = values[:, 0].astype(int)
        if ((cls < 0) | (cls >= len(classes))).any():
            problems.append((str(label_file), f"unknown class {cls[(cls < 0) | (cls >= len(classes))][0]} "
                                              f"(classes.txt has {len(classes)})"))
            continue
        w, h = Image.open(image).size
        cx, cy, bw, bh = values[:, 1] * w, values[:, 2] * h, values[:, 3] * w, values[:, 4] * h
        _add(items, problems, image, np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1), cls,
             label_file, (w, h))
    return SceneData(items, classes, "yolo", problems)


# --- instance masks: images/ + masks/ (PennFudan's PNGImages/ + PedMasks/) ----------------------------------------

def _mask_dirs(root: Path) -> tuple[Path, Path] | None:
    if not root.is_dir():
        return None
    masks = next((p for p in sorted(root.iterdir()) if p.is_dir() and "mask" in p.name.lower()), None)
    images = next((p for p in sorted(root.iterdir()) if p.is_dir() and p != masks and
                   p.name.lower() in ("images", "pngimages", "jpegimages", "img")), None)
    return (images, masks) if masks and images else None


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """One box per instance id in an instance mask (ids in increasing order, 0 = background)."""
    ids = np.unique(mask)
    ids = ids[ids != 0]
    boxes = []
    for k in ids:
        ys, xs = np.nonzero(mask == k)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


@_format("masks", lambda root: _mask_dirs(root) is not None)
def read_masks(root: Path) -> SceneData:
    img_dir, mask_dir = _mask_dirs(root)
    masks = {p.stem.removesuffix("_mask").removesuffix("_masks"): p for p in _images(mask_dir).values()}
    classes = _read_names(root)[:1] or ["object"]
    items, problems = [], []
    for stem, image in _images(img_dir).items():
        mask = masks.get(stem)
        if mask is None:
            problems.append((str(image), f"no mask in {mask_dir.name}/ (expected {stem}_mask.png or {stem}.png)"))
            continue
        try:
            m = np.asarray(Image.open(mask))
        except Exception as e:
            problems.append((str(mask), f"unreadable mask ({type(e).__name__})"))
            continue
        if m.ndim != 2:
            problems.append((str(mask), "a mask must be single-channel (pixel value k = object k)"))
            continue
        boxes = mask_boxes(m)
        _add(items, problems, image, boxes, np.zeros(len(boxes), dtype=np.int64), mask, (m.shape[1], m.shape[0]),
             mask=mask)
    return SceneData(items, classes, "masks", problems)


def split_indices(items: list[Annotated], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) item indices: the data's own split when it has one, else a seeded one."""
    if any(it.split for it in items):
        return ([i for i, it in enumerate(items) if it.split == "train"],
                [i for i, it in enumerate(items) if it.split == "val"])
    return seeded_split(len(items), val_fraction, seed)


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed, seeded hold-out split of item indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
