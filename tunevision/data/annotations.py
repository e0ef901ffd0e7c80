"""Boxes and masks on disk: Pascal VOC XML, COCO JSON, YOLO txt, LabelMe and Create ML JSON, box tables (CSV) and
mask folders, read into one form.

Every reader returns `Annotated` items (an image, its boxes in pixels, their class indices, optionally an
instance-mask file) and a list of problems, one `(file, reason)` per image left out: a box outside the image,
zero area, an unknown class, a missing image, an unreadable XML/JSON. Training never meets a left-out image.
"""
from __future__ import annotations

import csv
import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry
from tunevision.data.annotated import (
    IMAGE_SUFFIXES,
    LOSSY_MASKS,
    Annotated,
    SceneData,
    add_item,
    binary_values,
    class_index,
    class_labels,
    image_files,
    images_under,
    labelmap,
    mask_boxes,
    mask_ids,
    mask_values,
    one_channel,
    outlines_or_none,
    polygon_parts,
    read_names,
    rle_readable,
    voc_colours,
)
from tunevision.data.images import first_bytes
from tunevision.data.layout import (
    assigned_splits,
    entries,
    is_leftover,
    listed_names,
    listed_splits,
    split_dirs,
    split_in_name,
    split_lists,
    split_role,
    training_and_held_out,
    under_leftover,
    unwrap,
)
from tunevision.data.tables import (
    TABLE_SUFFIXES,
    coco_has_objects,
    image_paths,
    names_labels,
    names_map,
    path_column,
    read_rows,
)

FORMATS: Registry[Callable[[Path], SceneData]] = Registry("annotation format")
SENSES: list[tuple[str, Callable[[Path], bool]]] = []  # (format, "does this folder look like it?") in order


def _format(name: str, looks_like: Callable[[Path], bool]):
    def add(fn):
        SENSES.append((name, looks_like))
        return FORMATS.register(name)(fn)
    return add


def sniff_format(root: Path) -> str | None:
    """The annotation format of a folder (or COCO JSON file), or None when it holds none of them."""
    root = unwrap(root)
    folders = split_folders(root)
    if folders:
        return sniff_format(folders["train"])
    return next((name for name, looks in SENSES if looks(root)), None)


def split_folders(root: Path) -> dict[str, Path]:
    """{'train': ..., 'val': ...} when the data comes as train/ + val/ (or valid/, validation/, test/ where there is
    no val/) folders of one annotation format (Roboflow's and many other exports), else {}."""
    if not root.is_dir():
        return {}
    folders = training_and_held_out(split_dirs(root))
    return {"train": folders[0], "val": folders[1]} if folders and sniff_format(folders[0]) else {}


def read_scene_data(root: str | Path, fmt: str = "", task: str = "") -> SceneData:
    """The boxes and masks `root` holds, in format `fmt` (default: the one it looks like). For `task` segment, its
    masks where it holds boxes beside them (PASCAL VOC: an XML of boxes for every image, SegmentationClass/ for
    some)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise TunevisionError(f"{root}: not found")
    root = unwrap(root)
    folders = split_folders(root)
    if folders:
        return _read_split(folders)
    if not fmt and task == "segment" and _mask_dirs(root) is not None:
        fmt = "masks"
    fmt = fmt or sniff_format(root) or ""
    if not fmt:
        raise TunevisionError(f"{root}: no annotations found; detection/segmentation data is a VOC folder "
                              "(images/ + annotations/*.xml), a COCO JSON, a YOLO folder (images/ + labels/ + "
                              "classes.txt), LabelMe's JSON per image, a Create ML JSON, a box table (CSV) or images + "
                              "instance masks (PNGImages/ + PedMasks/)")
    data = FORMATS.get(fmt)(root)
    if not data.items:
        raise TunevisionError(f"{root}: no usable annotated image ({len(data.problems)} left out, e.g. "
                              f"{data.problems[0][0]}: {data.problems[0][1]})" if data.problems else
                              f"{root}: no annotated image found")
    return data


def _read_split(folders: dict[str, Path]) -> SceneData:
    """train/ and val/ read alike."""
    train = read_scene_data(folders["train"])
    return _joined(train, read_scene_data(folders["val"], train.format))


def _joined(train: SceneData, val: SceneData) -> SceneData:
    """A training and a validation set as one, split as given; the validation labels renamed into the training
    classes."""
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


# --- Pascal VOC: one XML per image --------------------------------------------------------------------------

def _voc_kind(path: Path) -> str:
    """'voc' for a Pascal VOC file by its content (an <annotation> root), whatever its folder is called; 'broken'
    for an XML that does not parse (reported, not skipped silently); '' for any other XML document."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if b"<annotation" in head:
            return "voc"
        ET.parse(path)
        return ""
    except (OSError, ET.ParseError):
        return "broken"


def _voc_files(root: Path, sniff: bool = False) -> list[Path]:
    """The VOC XML files (and broken XML beside them) anywhere under `root`: annotations/, annots/, Annotations/,
    beside the images. `sniff`: stop at the first genuine one."""
    if not root.is_dir():
        return []
    found, genuine = [], False
    for path in sorted(p for p in root.rglob("*.xml") if not under_leftover(p, root)):
        kind = _voc_kind(path)
        genuine = genuine or kind == "voc"
        if kind == "voc" and sniff:
            return [path]
        if kind and not sniff:
            found.append(path)
    return found if genuine else []


@_format("voc", lambda root: bool(_voc_files(root, sniff=True)))
def read_voc(root: Path) -> SceneData:
    """VOC XML paired with images by the <filename> it names, else by file stem: the image beside the XML first,
    then one anywhere under `root` outside its mask folders (VOC's SegmentationObject/2007_000032.png is no photo
    for 2007_000032.jpg)."""
    photos = [p for p in image_files(root) if not _in_mask_folder(p, root)]
    by_name, images, fixed = {p.name: p for p in photos}, {p.stem: p for p in photos}, read_names(root)
    classes, items, problems = list(fixed), [], []
    for xml in _voc_files(root):
        try:
            tree = ET.parse(xml).getroot()
            boxes, labels, unknown = [], [], ""
            for obj in tree.iter("object"):
                name = (obj.findtext("name") or "").strip()
                bb = obj.find("bndbox")
                boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                index = class_index(classes, name, bool(fixed))
                unknown = unknown or ("" if index is not None else name)
                labels.append(index)
            size = (int(float(tree.findtext("size/width") or 0)), int(float(tree.findtext("size/height") or 0)))
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            problems.append((str(xml), f"unreadable VOC XML ({type(e).__name__}: {str(e)[:60]})"))
            continue
        if unknown:
            problems.append((str(xml), f"unknown class {unknown!r} (not in classes.txt)"))
            continue
        filename = Path((tree.findtext("filename") or xml.stem).strip())
        beside = [xml.parent / filename.name] + [xml.with_suffix(s) for s in IMAGE_SUFFIXES]
        image = (next((p for p in beside if p.is_file()), None) or by_name.get(filename.name)
                 or images.get(filename.stem) or images.get(xml.stem) or xml.parent / filename.name)
        add_item(items, problems, image, boxes, labels, xml, size)
    return SceneData(_voc_split(root, items), classes, "voc", problems)


def _voc_split(root: Path, items: list[Annotated], sets_of: str = "main") -> list[Annotated]:
    """VOC's own split: ImageSets/Main/train.txt (or trainval.txt) and val.txt (or test.txt), one image name per
    line (the segmentation set's in ImageSets/Segmentation/)."""
    folder = _split_lists_folder(root, sets_of)
    splits = listed_splits(split_lists(folder), [str(it.image) for it in items]) if folder else None
    return items if splits is None else [dataclass_replace(it, split=s) for it, s in zip(items, splits)]


def _split_lists_folder(root: Path, sets_of: str) -> Path | None:
    sets = _subdir(root, "imagesets")
    return (_subdir(sets, sets_of) or sets) if sets else None


# --- JSON per image (LabelMe) or per folder (Apple's Create ML) --------------------------------------------------

JSON_HEAD = 1 << 16  # the first bytes by which a JSON file tells its format


def _labelme_files(root: Path, sniff: bool = False) -> list[Path]:
    """LabelMe's JSON files (one per image, with its `shapes`) anywhere under `root`; `sniff`: the first one that
    also names its image (a file cut short is listed, for reading it to say what is wrong)."""
    found = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        head = b"" if under_leftover(path, root) else first_bytes(path, JSON_HEAD)
        if b'"shapes"' in head and (not sniff or b'"imagePath"' in head):
            found.append(path)
            if sniff:
                break
    return found


class _ImagesByName:
    """The images under a folder by file name, for annotations whose image is not where they say: listed at the
    first such look, never where every image is found beside its annotations."""

    def __init__(self, root: Path) -> None:
        self.root, self.names = root, None

    def get(self, name: str, default: Path) -> Path:
        if self.names is None:
            self.names = {p.name: p for p in image_files(self.root)}
        return self.names.get(Path(name).name, default)


@_format("labelme", lambda root: bool(_labelme_files(root, sniff=True)))
def read_labelme(root: Path) -> SceneData:
    """LabelMe: each shape's outline and its box (rectangles, polygons and circles; lines and points have none),
    the image where `imagePath` says, else beside the JSON or anywhere under `root` by name."""
    fixed = read_names(root)
    classes, items, problems, by_name = list(fixed), [], [], _ImagesByName(root)
    for path in _labelme_files(root):
        try:
            record = json.loads(path.read_text(errors="replace"))
            shapes = [s for s in record["shapes"] if s.get("shape_type", "polygon") in ("rectangle", "polygon", "circle")]
            outlines = [[_shape_outline(s)] for s in shapes]
            boxes = [[*o[0].min(0), *o[0].max(0)] for o in outlines]
            names = [str(s["label"]).strip() for s in shapes]
            size = (int(record.get("imageWidth") or 0), int(record.get("imageHeight") or 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            problems.append((str(path), f"unreadable LabelMe JSON ({type(e).__name__}: {str(e)[:60]})"))
            continue
        labels, unknown = class_labels(classes, names, bool(fixed))
        if unknown:
            problems.append((str(path), unknown))
            continue
        name = str(record.get("imagePath") or path.stem).replace("\\", "/")
        image = path.parent / name
        if not image.is_file():
            image = next((path.with_suffix(x) for x in IMAGE_SUFFIXES if path.with_suffix(x).is_file()), None) or \
                by_name.get(name, image)
        add_item(items, problems, image, boxes, labels, path, size, polygons=outlines_or_none(outlines))
    return SceneData(items, classes, "labelme", problems)


def _shape_outline(shape: dict) -> np.ndarray:
    """A LabelMe shape as a polygon: a rectangle's four corners from its two, a circle (its centre and a point on
    it) as 32 points, a polygon as it is."""
    points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
    if shape.get("shape_type") == "circle":
        r = float(np.hypot(*(points[1] - points[0])))
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return points[0] + r * np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape.get("shape_type") == "rectangle":
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        return np.asarray([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    if len(points) < 3:
        raise ValueError(f"a polygon of {len(points)} points")
    return points


def _createml_file(root: Path) -> Path | None:
    """A Create ML file: a JSON list of {"image", "annotations"}, the file itself or one at the top of a folder."""
    candidates = [root] if root.is_file() else [p for p in entries(root) if p.is_file()] if root.is_dir() else []
    for path in (p for p in candidates if p.suffix.lower() == ".json"):
        head = first_bytes(path, 1 << 12).lstrip()
        if head.startswith(b"[") and b'"image"' in head and b'"annotations"' in head:
            return path
    return None


@_format("createml", lambda root: _createml_file(root) is not None)
def read_createml(root: Path) -> SceneData:
    """Create ML: boxes as their centre, width and height in pixels, images beside the file."""
    path = _createml_file(root)
    fixed = read_names(path.parent)
    classes, items, problems = list(fixed), [], []
    try:
        records = json.loads(path.read_text(errors="replace"))
        if not isinstance(records, list):
            raise TypeError("not a list of images")
    except (OSError, ValueError, TypeError) as e:
        raise TunevisionError(f"{path}: unreadable Create ML JSON ({type(e).__name__}: {str(e)[:80]}); it is a "
                              "list of {\"image\": ..., \"annotations\": [...]}") from None
    for n, record in enumerate(records):
        try:
            anns = record.get("annotations") or []
            centres = [[float(a["coordinates"][k]) for k in ("x", "y", "width", "height")] for a in anns]
            names = [str(a["label"]).strip() for a in anns]
            image = path.parent / str(record["image"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append((f"{path}: item {n}", f"unreadable ({type(e).__name__}: {str(e)[:60]})"))
            continue
        labels, unknown = class_labels(classes, names, bool(fixed))
        if unknown:
            problems.append((f"{path}: {image.name}", unknown))
            continue
        boxes = [[x - w / 2, y - h / 2, x + w / 2, y + h / 2] for x, y, w, h in centres]
        add_item(items, problems, image, boxes, labels, path)
    return SceneData(items, classes, "createml", problems)


def _via_file(root: Path) -> Path | None:
    """A VGG Image Annotator export: a JSON of images with their `regions` (`via_region_data.json`, as Mask R-CNN's
    balloon tutorial ships it), or a VIA project holding them under `_via_img_metadata`; the file itself or one at
    the top of a folder."""
    candidates = [root] if root.is_file() else [p for p in entries(root) if p.is_file()] if root.is_dir() else []
    for path in (p for p in candidates if p.suffix.lower() == ".json"):
        head = first_bytes(path, JSON_HEAD)
        if b'"_via_img_metadata"' in head or b'"regions"' in head and b'"filename"' in head:
            return path
    return None


@_format("via", lambda root: _via_file(root) is not None)
def read_via(root: Path) -> SceneData:
    """VIA: each region's outline and box (rectangles, polygons, circles and ellipses; points and lines have none),
    its class the first name in its attributes (`{"name": "balloon"}`, or a chosen option), else `object`; the
    image beside the file, else anywhere under `root` by name."""
    path = _via_file(root)
    fixed = read_names(path.parent)
    classes, items, problems, by_name = list(fixed), [], [], _ImagesByName(root)
    try:
        found = json.loads(path.read_text(errors="replace"))
        records = found.get("_via_img_metadata", found)
        if not isinstance(records, dict):
            raise TypeError("no images in it")
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise TunevisionError(f"{path}: unreadable VIA JSON ({type(e).__name__}: {str(e)[:80]}); it maps each image "
                              "to its filename and regions") from None
    for key, record in records.items():
        try:
            regions = record.get("regions") or []
            regions = list(regions.values()) if isinstance(regions, dict) else regions  # VIA 1 numbered them
            shaped = [(o, r) for r in regions if (o := _via_outline(r["shape_attributes"])) is not None]
            outlines = [[o] for o, _ in shaped]
            names = [_via_class(r.get("region_attributes") or {}) for _, r in shaped]
            filename = str(record["filename"]).replace("\\", "/")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append((f"{path}: {key}", f"unreadable VIA region ({type(e).__name__}: {str(e)[:60]})"))
            continue
        labels, unknown = class_labels(classes, names, bool(fixed))
        if unknown:
            problems.append((f"{path}: {filename}", unknown))
            continue
        image = path.parent / filename
        if not image.is_file():
            image = by_name.get(filename, image)
        boxes = [[*o[0].min(0), *o[0].max(0)] for o in outlines]
        add_item(items, problems, image, boxes, labels, path, polygons=outlines_or_none(outlines))
    return SceneData(items, classes, "via", problems)


def _via_outline(shape: dict) -> np.ndarray | None:
    """A VIA shape as a polygon (circles and ellipses as 32 points), or None for a point or a line."""
    kind = shape.get("name")
    if kind == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return np.asarray([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    if kind == "polygon":
        points = np.stack([np.asarray(shape["all_points_x"], float), np.asarray(shape["all_points_y"], float)], 1)
        if len(points) < 3:
            raise ValueError(f"a polygon of {len(points)} points")
        return points
    if kind in ("circle", "ellipse"):
        cx, cy = float(shape["cx"]), float(shape["cy"])
        rx = float(shape.get("r", shape.get("rx", 0)))
        ry = float(shape.get("r", shape.get("ry", 0)))
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
    return None


def _via_class(attributes: dict) -> str:
    """A region's class: its first attribute that is a name, or the option chosen in one (`{"type": {"car": true}}`);
    `object` where it has neither (the balloon set's regions have no attributes)."""
    for value in attributes.values():
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, dict):
            chosen = [k for k, on in value.items() if on]
            if chosen:
                return str(chosen[0]).strip()
    return "object"


# --- COCO: one JSON for many images ---------------------------------------------------------------------------

def _coco_files(root: Path) -> list[Path]:
    """The COCO files of a folder (or the file itself): beside the images or in annotations/."""
    if root.is_file() and root.suffix == ".json":
        return [root] if _looks_like_coco(root) else []
    if not root.is_dir():
        return []
    found = sorted(p for folder in (root, root / "annotations") if folder.is_dir() for p in folder.glob("*.json")
                   if not is_leftover(p.name))
    return [p for p in found if _looks_like_coco(p)]


def _coco_file(root: Path) -> Path | None:
    return next(iter(_coco_files(root)), None)


def _looks_like_coco(path: Path) -> bool:
    """A COCO file of boxes or masks: a JSON object named so (coco, instances, annotations) or holding 'images' and
    'annotations', whose annotations have a bbox or segmentation somewhere. COCO's form without them is labels
    (iNaturalist's, iWildCam's), read as a label table; a list (a label file of records named annotations.json) is
    none. A file that starts like one and does not parse counts, so that reading it says what is wrong with it."""
    if "createml" in path.name.lower():  # Roboflow's Create ML export: _annotations.createml.json
        return False
    head = first_bytes(path, JSON_HEAD).removeprefix(b"\xef\xbb\xbf")
    if not head.lstrip().startswith(b"{"):
        return False
    if any(hint in path.name.lower() for hint in ("coco", "instances", "annotations")):
        return _mentions_objects(path) or not _ends_whole(path)
    if b'"images"' not in head:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError:
        return False
    except (ValueError, UnicodeDecodeError):
        return True
    return isinstance(data, dict) and "images" in data and coco_has_objects(data.get("annotations"))


def _ends_whole(path: Path) -> bool:
    """Whether a JSON object's file ends as one does (a `}`): a file cut short is taken for what its name says."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64))
            return f.read().rstrip().endswith(b"}")
    except OSError:
        return False


def _mentions_objects(path: Path, chunk: int = 1 << 22) -> bool:
    """Whether a COCO file mentions a bbox or segmentation, read in chunks up to the first: no parse of a file of
    hundreds of MB (COCO's first box follows its list of images, 20 MB into instances_train2017.json)."""
    keys, tail = (b'"bbox"', b'"segmentation"'), b""
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                text = tail + block
                if any(k in text for k in keys):
                    return True
                tail = text[-16:]
    except OSError:
        return False
    return False


@_format("coco", lambda root: _coco_file(root) is not None)
def read_coco(root: Path) -> SceneData:
    """One COCO file, or COCO's own pair (`instances_train2017.json` and `instances_val2017.json`) as the split."""
    pair = training_and_held_out({split_in_name(p): p for p in _coco_files(root)})
    if pair:
        return _joined(*map(_read_coco_file, pair))
    return _read_coco_file(_coco_file(root))


def _read_coco_file(path: Path) -> SceneData:
    try:
        coco = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark, as Windows tools write one
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        records = {int(im["id"]): im for im in coco["images"]}
        annotations = coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TunevisionError(f"{path}: unreadable COCO JSON ({type(e).__name__}: {str(e)[:80]}); it needs "
                              "'images', 'annotations' and 'categories'") from None
    # a category no box uses is no class a detector can learn: Roboflow's exports list their dataset's name as
    # category 0 ("raccoons", the supercategory of "raccoon"), which made a second, empty class
    used = {int(a.get("category_id", -1)) for a in annotations if isinstance(a, dict)}
    kept = sorted(k for k in categories if k in used) or sorted(categories)
    classes = [categories[k] for k in kept]
    index = {k: i for i, k in enumerate(kept)}
    per_image: dict[int, list[dict]] = {k: [] for k in records}
    items, problems = [], []
    for a in annotations:
        if not a.get("iscrowd", 0):  # a crowd region is one box over many objects: COCO's evaluation ignores it too
            per_image.setdefault(int(a.get("image_id", -1)), []).append(a)
    folder = next((d for d in (path.parent / "images", path.parent.parent / "images", path.parent) if d.is_dir()))
    anywhere: dict[str, Path] = {}  # filled at the first image not where file_name says (COCO's train2017/ ...)

    def locate(name: str) -> Path:
        if (folder / name).is_file() or not name:
            return folder / name
        if not anywhere:
            top = path.parent.parent if path.parent.name.lower() == "annotations" else path.parent
            anywhere.update({p.name: p for p in image_files(top)})
        return anywhere.get(Path(name).name, folder / name)
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
        # outlines where the file has them: polygons, or run-length masks (decoded with the image)
        outlines = [polygon_parts(seg) if isinstance(seg := a.get("segmentation"), list) else
                    seg if rle_readable(seg) else [] for a in anns]
        name = str(record.get("file_name", ""))
        add_item(items, problems, locate(name), boxes, [index[int(a["category_id"])] for a in anns],
                 Path(f"{path}: {name}"), (int(record.get("width", 0)), int(record.get("height", 0))),
                 polygons=outlines_or_none(outlines))
    return SceneData(items, classes, "coco", problems)


# --- a box table: one row per box (TensorFlow's object-detection CSV: filename,width,height,class,xmin,...) ------

BOX_COLUMNS = (("xmin", "ymin", "xmax", "ymax"), ("x_min", "y_min", "x_max", "y_max"), ("x1", "y1", "x2", "y2"),
               ("left", "top", "right", "bottom"))
# a corner and a size: (x, y, w, h) columns, or one cell holding the four as COCO does (Global Wheat's
# `bbox` = "[834.0, 222.0, 56.0, 36.0]")
SIZE_COLUMNS = (("x", "y", "w", "h"), ("x", "y", "width", "height"), ("bbox_x", "bbox_y", "bbox_width", "bbox_height"))
LIST_COLUMNS = ("bbox", "bounding_box", "bboxes")
CLASS_COLUMNS = ("class", "label", "category", "class_name", "name", "labels")


def _box_columns(header: list[str]) -> tuple[list[int], bool] | None:
    """(the columns of a box, whether they give a corner and a size rather than two corners), or None."""
    names = [h.strip().lower() for h in header]
    if len(names) < 2:  # a names file (classes.txt) is no table of boxes, whatever its first name
        return None
    for forms, sized in ((BOX_COLUMNS, False), (SIZE_COLUMNS, True), ([(c,) for c in LIST_COLUMNS], True)):
        found = next(([names.index(c) for c in cols] for cols in forms if all(c in names for c in cols)), None)
        if found:
            return found, sized
    return None


def _box_cells(row: list[str], columns: list[int]) -> list[str]:
    """The four numbers of a row's box as text: from their columns, or from the one cell that lists them."""
    cells = [row[i].strip() if i < len(row) else "" for i in columns]
    if len(cells) == 1:
        inside = cells[0].strip("[]() ")
        return [c.strip() for c in inside.replace(";", ",").split(",")] if inside else [""] * 4
    return cells


def _box_table(root: Path) -> Path | None:
    """A CSV whose header names a box (corners xmin..ymax, x1..y2, left..bottom; a corner and a size x,y,w,h; a
    `bbox` list cell): the file itself, or the one such table at the top of a folder."""
    candidates = [root] if root.is_file() else [p for p in entries(root) if p.is_file()] if root.is_dir() else []
    for path in candidates:
        if path.suffix.lower() in TABLE_SUFFIXES:
            try:
                with open(path, encoding="utf-8-sig", errors="replace") as f:
                    first = f.readline()
            except OSError:
                continue
            if _box_columns(next(csv.reader([first], delimiter=";" if first.count(";") > first.count(",") else
                                            "\t" if "\t" in first else ","), [])):
                return path
    return None


@_format("boxes", lambda root: _box_table(root) is not None)
def read_boxes(root: Path) -> SceneData:
    """A box table: rows grouped by image (a row with empty corners is an image with no object); corners in
    pixels, or as fractions of the image when none passes 1; images found as for a label table."""
    path = _box_table(root)
    rows = read_rows(path)
    header, body = [h.strip().lower() for h in rows[0]], rows[1:]
    columns, sized = _box_columns(header)
    image_col = path_column(body) if body else 0
    label_col = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if label_col is None:  # Open Images' LabelName
        label_col = next((i for i, c in enumerate(rows[0]) if names_labels(c)), None)
    fixed = read_names(path.parent)
    classes, items, problems = list(fixed), [], []
    files, _ = image_paths(path, [r[image_col] for r in body])
    per_image: dict[str, list] = {}
    for n, (r, file) in enumerate(zip(body, files), start=2):
        boxes, labels, bad = per_image.setdefault(file, [[], [], ""])
        cells = _box_cells(r, columns)
        if not any(cells):
            continue
        try:
            box = [float(c) for c in cells]
            if len(box) != 4:
                raise ValueError
        except ValueError:
            per_image[file][2] = bad or f"{path.name}:{n}: box {cells} is not four numbers"
            continue
        if sized:  # corner and size -> two corners
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        name = r[label_col].strip() if label_col is not None and label_col < len(r) else "object"
        index = class_index(classes, name or "object", bool(fixed))
        if index is None:
            per_image[file][2] = bad or f"{path.name}:{n}: unknown class {name!r} (not in classes.txt)"
            continue
        boxes.append(box)
        labels.append(index)
    for file, (boxes, labels, bad) in per_image.items():
        if bad:
            problems.append((file, bad))
            continue
        size = _header_size(file) if boxes and max(max(b) for b in boxes) <= 1.0 else None  # fractions
        if size:
            boxes = [[x1 * size[0], y1 * size[1], x2 * size[0], y2 * size[1]] for x1, y1, x2, y2 in boxes]
        add_item(items, problems, Path(file), boxes, labels, path, size)
    if not fixed:  # Open Images' MIDs, named by its class-descriptions.csv beside the table
        names = names_map(path.parent, classes)[0]
        classes = [names.get(c, c) for c in classes]
    return SceneData(items, classes, "boxes", problems)


def _header_size(file: str) -> tuple[int, int] | None:
    """An image's size from its header, or None where it does not open (add_item then says why)."""
    try:
        with Image.open(file) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any reason: add_item names it
        return None


# --- YOLO: images/ + labels/ with one "class cx cy w h" line per box, normalised ---------------------------------

def _yolo_dirs(root: Path) -> tuple[Path, Path] | None:
    """(images, labels) folders of YOLO data: images/ + labels/, or LabelImg's YOLO mode (each image's .txt beside
    it, classes.txt with them: both folders are `root`)."""
    img, lab = _subdir(root, "images"), _subdir(root, "labels")
    if img and lab:
        return (img, lab) if _yolo_lines(lab.rglob("*.txt")) else None
    if not read_names(root):
        return None
    stems = {p.stem for p in entries(root) if p.suffix.lower() in IMAGE_SUFFIXES}
    beside = [p for p in entries(root) if p.suffix.lower() == ".txt" and p.stem in stems]
    return (root, root) if beside and _yolo_lines(iter(beside)) else None


def _yolo_lines(files: Iterator[Path], sample: int = 20) -> bool:
    """Whether label files are YOLO's by their content: lines of numbers, never words. DTD's labels/ holds split
    lists (`train1.txt`: one image path per line) beside images/, and was read as YOLO data."""
    numeric = False
    for file in itertools.islice(files, sample):
        line = next((x for x in first_bytes(file, 1 << 12).decode("utf-8", "replace").splitlines() if x.strip()), "")
        try:
            numeric |= len([float(v) for v in line.split()]) >= 5
        except ValueError:
            return False
    return numeric


@_format("yolo", lambda root: _yolo_dirs(root) is not None)
def read_yolo(root: Path) -> SceneData:
    img_dir, lab_dir = _yolo_dirs(root)
    classes = read_names(root)
    if not classes:
        raise TunevisionError(f"{root}: YOLO labels need class names; add classes.txt (one name per line) or a "
                              "data.yaml with 'names'")
    items, problems = [], []
    for image in image_files(img_dir):
        label_file = lab_dir / image.relative_to(img_dir).with_suffix(".txt")
        try:
            rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()] \
                if label_file.is_file() else []  # no label file: an image with no objects (YOLO's convention)
            values = np.asarray([_yolo_box(r) for r in rows], dtype=np.float64).reshape(-1, 5)
        except (OSError, ValueError) as e:
            problems.append((str(label_file), f"unreadable YOLO label ({type(e).__name__}: {e}); each line is "
                                              "'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 ...')"))
            continue
        cls = values[:, 0].astype(int)
        if ((cls < 0) | (cls >= len(classes))).any():
            problems.append((str(label_file), f"unknown class {cls[(cls < 0) | (cls >= len(classes))][0]} "
                                              f"(classes.txt has {len(classes)})"))
            continue
        w, h = Image.open(image).size
        cx, cy, bw, bh = values[:, 1] * w, values[:, 2] * h, values[:, 3] * w, values[:, 4] * h
        # segment lines are outlines too; a box line has none (a plain box file is detection data)
        outlines = [polygon_parts([float(x) for x in r[1:]]) if len(r) > 5 else [] for r in rows]
        outlines = [[part * (w, h) for part in o] for o in outlines]
        add_item(items, problems, image, np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1), cls,
                 label_file, (w, h), polygons=outlines_or_none(outlines))
    return SceneData(_splits_from_folders(items, img_dir), classes, "yolo", problems)


def _yolo_box(row: list[str]) -> list[float]:
    """'class cx cy w h' as it is; Ultralytics' segment lines 'class x1 y1 x2 y2 ...' (a polygon of three or more
    points) as the polygon's box in the same form."""
    v = [float(x) for x in row]
    if len(v) == 5:
        return v
    if len(v) < 7 or len(v) % 2 == 0:
        raise ValueError(f"{len(v)} values in a line")
    xs, ys = v[1::2], v[2::2]
    return [v[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]


def _splits_from_folders(items: list[Annotated], img_dir: Path) -> list[Annotated]:
    """Ultralytics' images/train/ + images/val/ (or test/ where there is no val/): the split the folders give."""
    parts = [it.image.relative_to(img_dir).parts for it in items]
    splits = assigned_splits([split_role(p[0]) if len(p) > 1 else "" for p in parts])
    return items if splits is None else [dataclass_replace(it, split=s) for it, s in zip(items, splits)]


# --- masks: images/ + masks/, of instances (PennFudan's PedMasks/) or of classes (SegmentationClass/) -------------

MASK_DIRS = ("mask", "segmentation", "groundtruth", "ground_truth")  # in a folder's name (or the name is "gt")
IMAGE_DIRS = ("images", "imgs", "img", "pngimages", "jpegimages", "photos")
BACKGROUND = ("background", "_background_", "__background__", "bg", "void", "none")


def _is_mask_folder(name: str) -> bool:
    return any(w in name.lower() for w in MASK_DIRS) or name.lower() == "gt"


def _in_mask_folder(path: Path, root: Path) -> bool:
    return any(_is_mask_folder(part) for part in path.relative_to(root).parts[:-1])


MASK_SUFFIXES = ("_mask", "_masks", "_segmentation")  # PennFudan's X_mask.png, Carvana's, ISIC's X_segmentation.png


def mask_stem(path: Path) -> str:
    """The image stem a mask file is for."""
    stem = path.stem
    for suffix in MASK_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def _looks_like_a_mask(path: Path | None) -> bool:
    """Whether a file is a mask, not a photo: one channel or a palette, or grey or a few flat colours in RGB (a
    `Mask/` beside `Normal/` of numbered photos is a class of face-mask photos)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                return True
            im.thumbnail((64, 64), Image.NEAREST)
            rgb = np.asarray(im.convert("RGB")).astype(np.int16).reshape(-1, 3)
    except Exception:  # noqa: BLE001  (no file, or none PIL reads: no mask folder)
        return False
    grey = int(np.abs(np.diff(rgb, axis=1)).max()) <= 24  # a JPEG's blur leaves grey a little off
    return grey or len(np.unique(rgb, axis=0)) <= 32


def _mask_dirs(root: Path) -> tuple[Path, Path] | None:
    """(images, masks) folders in `root`: the masks by their folder's name, the images by theirs (`images/`,
    `JPEGImages/`), else the folder whose images the masks are named for (Carvana's `train/` beside
    `train_masks/`, ISIC's `..._Input/` beside `..._GroundTruth/`)."""
    if not root.is_dir():
        return None
    folders = [p for p in entries(root) if p.is_dir()]
    masks = next((p for p in folders if _is_mask_folder(p.name)), None)
    if masks is None:
        return None
    images = next((p for p in folders if p != masks and p.name.lower() in IMAGE_DIRS), None)
    if images is None and _looks_like_a_mask(next(iter(image_files(masks)), None)):
        stems = {mask_stem(p) for p in itertools.islice(image_files(masks), 200)}

        def named(folder: Path) -> int:
            return sum(p.stem in stems for p in itertools.islice(image_files(folder), 200))
        found = max(((named(d), d) for d in folders if not _is_mask_folder(d.name)), default=(0, None),
                    key=lambda pair: pair[0])
        images = found[1] if found[0] * 2 > len(stems) else None
    return (images, masks) if images else None


# PASCAL VOC's classes, values 1..20 of its class masks (0 the background, 255 the objects' borders)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _voc_palette(mask_dir: Path) -> bool:
    """Whether the class masks carry VOC's palette, as VOC's own and the sets made like it (SBD's) do."""
    first = next(iter(images_under(mask_dir).values()), None)
    try:
        with Image.open(first) as im:
            palette = im.getpalette() if im.mode == "P" else None
    except Exception:  # noqa: BLE001  (no mask, or one PIL cannot read: no VOC palette either)
        return False
    return bool(palette) and palette[:3 * (len(VOC_CLASSES) + 1)] == voc_colours(len(VOC_CLASSES) + 1)


def _binary_masks(mask_dir: Path, sample: int = 5) -> bool:
    """Whether the first masks are binary (0 and 255 alone, or saved as JPEG): foreground against background."""
    masks = list(itertools.islice(images_under(mask_dir).values(), sample))
    if not masks or all(p.suffix.lower() in LOSSY_MASKS for p in masks):
        return bool(masks)
    try:
        for p in masks:
            with Image.open(p) as im:  # a palette's values as their colours' grey: VOC's are not binary
                values = one_channel(np.asarray(im.convert("L") if im.mode == "P" else im))
            if values.ndim != 2 or not binary_values(values):
                return False
    except Exception:  # noqa: BLE001  (an unreadable mask: read_masks lists it)
        return False
    return True


def mask_classes(root: Path, mask_dir: Path) -> tuple[list[str], bool]:
    """(class names, whether pixel values are classes). Instance masks (PennFudan: value k = person k) hold one
    class; masks are class maps (value v = class v, VOC's SegmentationClass) when a names file gives two or more
    classes besides the background, or the folder says so (`SegmentationClass/`, `semantic_masks/`), or they are
    binary (0/255 or JPEG: ISIC's, Kvasir-SEG's foreground as one class). Masks in VOC's palette without a names
    file have VOC's classes."""
    names = read_names(root) or [name for name, _ in labelmap(mask_dir)]  # CVAT's labelmap.txt: the background first
    if names and names[0].strip().lower() in BACKGROUND:  # value 0 is the background, named or not
        names = names[1:]
    if not names and _voc_palette(mask_dir):
        names = list(VOC_CLASSES)
    if len(names) < 2 and _binary_masks(mask_dir):
        return names[:1] or ["object"], True
    semantic = len(names) >= 2 or any(w in mask_dir.name.lower() for w in ("class", "semantic"))
    return (names if semantic else names[:1] or ["object"]), semantic


@_format("masks", lambda root: _mask_dirs(root) is not None)
def read_masks(root: Path) -> SceneData:
    img_dir, mask_dir = _mask_dirs(root)
    masks = {mask_stem(p): p for p in images_under(mask_dir).values()}
    classes, semantic = mask_classes(root, mask_dir)
    named = bool(classes) and semantic  # else a class map's names come from the values found ("class 3")
    items, problems = [], []
    images = images_under(img_dir)
    lists = _split_lists_folder(root, "segmentation")
    if lists and "segmentation" in lists.name.lower():  # VOC: the images its segmentation lists name, of them all
        listed = {n for f in split_lists(lists).values() for n in listed_names(f)}
        images = {stem: image for stem, image in images.items() if stem in listed} if listed else images
    for stem, image in images.items():
        mask = masks.get(stem)
        if mask is None:
            problems.append((str(image), f"no mask in {mask_dir.name}/ (expected {stem}_mask.png or {stem}.png)"))
            continue
        try:
            with Image.open(mask) as opened:
                m = mask_values(opened, mask)
        except ValueError as e:  # a colour that no class has
            problems.append((str(mask), str(e)))
            continue
        except Exception as e:
            problems.append((str(mask), f"unreadable mask ({type(e).__name__})"))
            continue
        if m.ndim != 2:
            problems.append((str(mask), ("a mask must be single-channel (pixel value k = object k, or class k), or "
                                         "coloured as labelmap.txt says")))
            continue
        ids = mask_ids(m)
        if semantic and named and len(ids) and ids[-1] > len(classes):
            problems.append((str(mask), f"pixel value {ids[-1]} has no class: classes.txt names {len(classes)}"))
            continue
        if semantic and not named:
            classes += [f"class {v}" for v in range(len(classes) + 1, int(ids[-1]) + 1 if len(ids) else 0)]
        labels = ids.astype(np.int64) - 1 if semantic else np.zeros(len(ids), dtype=np.int64)
        add_item(items, problems, image, mask_boxes(m), labels, mask, (m.shape[1], m.shape[0]), mask=mask)
    return SceneData(_voc_split(root, items, "segmentation"), classes, "masks", problems)


def semantic_masks(root: Path) -> bool:
    """Whether `root`, which `sniff_format` found to hold masks, holds masks whose pixel values are classes (see
    `mask_classes`): a segmentation set."""
    root = unwrap(root)
    folders = split_folders(root)
    dirs = _mask_dirs(folders["train"] if folders else root)
    return bool(dirs) and mask_classes(dirs[1].parent, dirs[1])[1]
