"""Annotated images, whatever the file format: `Annotated` items (an image, its boxes in pixels, their class
indices, optionally an instance-mask file) checked on the way in, and the train/val split of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from tunevision.data.images import ImageError
from tunevision.data.layout import split_role, under_leftover

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # GIF: Carvana's masks
SLACK = 2.0  # pixels a box may pass the image border by (VOC's 1-based corners, rounding) before it counts as bad


@dataclass
class Annotated:
    image: Path
    boxes: np.ndarray            # (N, 4) float32, x1 y1 x2 y2 in pixels
    labels: np.ndarray           # (N,) int64, index into the class names
    mask: Path | None = None     # instance ids: pixel value k = object k (k-th box), 0 = background
    split: str = ""              # "train" / "val" when the data comes split, else "" (a seeded split is drawn)
    size: tuple[int, int] | None = None  # (width, height) the boxes were checked against
    # or each object's outline instead of a mask file: a list of (K, 2) x, y polygons per box, in pixels (COCO's,
    # LabelMe's and YOLO's segment polygons), or COCO's run-length mask (a dict: size, counts), drawn into masks
    # at the size the image is decoded to
    polygons: list[list[np.ndarray] | dict] | None = None

    @property
    def has_masks(self) -> bool:
        return self.mask is not None or self.polygons is not None


@dataclass
class SceneData:
    items: list[Annotated]
    classes: list[str]
    format: str
    problems: list[tuple[str, str]] = field(default_factory=list)


def image_files(folder: Path) -> list[Path]:
    """Every image anywhere under `folder`, in path order, what tools left behind (`__MACOSX/`, `._x.jpg`) left out."""
    return [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and not under_leftover(p, folder)]


def images_under(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in image_files(folder)}


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


def add_item(items: list[Annotated], problems: list, image: Path, boxes: list, labels: list, source: Path,
         size: tuple[int, int] | None = None, mask: Path | None = None,
         polygons: list[list[np.ndarray]] | None = None) -> None:
    """One annotated image, checked: appended to `items`, or its reason to `problems`. `polygons`: one outline
    (a list of parts) per box, where every object of the image has one."""
    if not image.is_file():
        problems.append((str(source), f"image {image.name} not found in {image.parent}"))
        return
    try:
        if not (size and min(size) > 0):
            with Image.open(image) as im:  # the header only; decoding checks the pixels later
                size = im.size
    except Exception as e:
        problems.append((str(image), f"unreadable image ({type(e).__name__})"))
        return
    checked, reason = check_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), size)
    if reason:
        problems.append((str(source), reason))
        return
    items.append(Annotated(image, checked, np.asarray(labels, dtype=np.int64), mask, size=tuple(size),
                           polygons=polygons))


def polygon_parts(flat: list) -> list[np.ndarray]:
    """COCO's and YOLO's polygons ([x1, y1, x2, y2, ...], or a list of such parts) as (K, 2) arrays; parts of
    fewer than three points are dropped."""
    parts = flat if flat and isinstance(flat[0], (list, tuple)) else [flat]
    arrays = [np.asarray(part, dtype=np.float64).reshape(-1, 2) for part in parts if len(part) >= 6]
    return [a for a in arrays if np.isfinite(a).all()]


def rle_mask(rle: dict) -> np.ndarray:
    """COCO's run-length mask ({"size": [h, w], "counts": runs or their compressed string}) as an (h, w) uint8
    0/1 array, by pycocotools (`rle_readable` said it is there)."""
    from pycocotools import mask as coco_mask
    try:
        h, w = (int(v) for v in rle["size"])
        if isinstance(rle["counts"], list):
            return coco_mask.decode(coco_mask.frPyObjects(rle, h, w))
        return coco_mask.decode({"size": [h, w], "counts": rle["counts"]})
    except Exception as e:  # noqa: BLE001 - pycocotools raises its own types for damaged runs
        raise ImageError(f"unreadable COCO run-length mask ({type(e).__name__}: {str(e)[:60]})") from None


def rle_readable(segmentation) -> bool:
    """Whether an annotation's segmentation is a run-length mask that can be decoded here (pycocotools, the
    detect extra, installed); without it such objects have no outline and their images give boxes only."""
    if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (list, str))
            and isinstance(segmentation.get("size"), list) and len(segmentation["size"]) == 2):
        return False
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


def outlines_or_none(outlines: list[list[np.ndarray]]) -> list[list[np.ndarray]] | None:
    """The image's outlines when every object has one, else None (an image is given masks whole or not at all)."""
    return outlines if outlines and all(outlines) else None


def draw_outlines(outlines: list[list[np.ndarray] | dict], scale: float, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) uint8 binary masks, one per object, of outlines scaled by `scale` onto a `size` (W, H) image; a
    run-length mask is decoded at its own size and resized as a mask file is (nearest)."""
    masks = np.zeros((len(outlines), size[1], size[0]), np.uint8)
    for k, parts in enumerate(outlines):
        if isinstance(parts, dict):
            masks[k] = np.asarray(Image.fromarray(rle_mask(parts)).resize(size, Image.NEAREST))
            continue
        canvas = Image.new("L", size, 0)
        draw = ImageDraw.Draw(canvas)
        for part in parts:
            draw.polygon([tuple(xy) for xy in (part * scale).tolist()], fill=1, outline=1)
        masks[k] = np.asarray(canvas)
    return masks


def class_index(classes: list[str], name: str, fixed: bool) -> int | None:
    if name not in classes:
        if fixed:
            return None
        classes.append(name)
    return classes.index(name)


def class_labels(classes: list[str], names: list[str], fixed: bool) -> tuple[list[int], str]:
    """Each name's class index (`class_index`), and the reason an image is left out where a fixed list of classes
    lacks one of them ("" where none)."""
    labels = [class_index(classes, n, fixed) for n in names]
    return labels, f"unknown class {names[labels.index(None)]!r} (not in classes.txt)" if None in labels else ""


def read_names(root: Path) -> list[str]:
    """classes.txt (one per line), or the `names` of a YOLO data.yaml; empty when there is neither. A split
    folder's names may sit one level up, beside it and its twins (Roboflow's train/ valid/ test/ + data.yaml)."""
    for folder in (root, root.parent) if split_role(root.name) else (root,):
        for p in (folder / "classes.txt", folder / "labels" / "classes.txt", folder / "obj.names"):
            if p.is_file():
                return [line.strip() for line in p.read_text().splitlines() if line.strip()]
        for p in (folder / "data.yaml", folder / "dataset.yaml"):
            if p.is_file():
                names = (yaml.safe_load(p.read_text()) or {}).get("names", [])
                return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    return []


VOID = 255  # a mask's "void" value (PASCAL VOC's object borders): neither background nor an object
LABELMAP = "labelmap.txt"  # CVAT's and Datumaro's: `name:r,g,b:parts:actions` a class, the background first


def voc_colours(n: int) -> list[int]:
    """PASCAL VOC's colour map (value v's colour from the bits of v), flattened as PIL gives a palette."""
    out = []
    for v in range(n):
        r = g = b = 0
        for j in range(8):
            r, g, b = r | ((v >> 3 * j) & 1) << (7 - j), g | ((v >> 3 * j + 1) & 1) << (7 - j), \
                b | ((v >> 3 * j + 2) & 1) << (7 - j)
        out += [r, g, b]
    return out


def labelmap(mask_dir: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, colour) per class of a labelmap.txt beside a mask folder or in it; [] without one."""
    for f in (mask_dir.parent / LABELMAP, mask_dir / LABELMAP):
        if f.is_file():
            rows = []
            for line in f.read_text(errors="replace").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    name, _, rest = line.partition(":")
                    colour = tuple(int(v) for v in rest.split(":")[0].split(",") if v.strip().isdigit())
                    rows.append((name.strip(), colour))
            return rows
    return []


LOSSY_MASKS = (".jpg", ".jpeg")  # a mask saved so is a binary one blurred at its edges (Kvasir-SEG's)


def binary_values(values: np.ndarray) -> bool:
    """Whether a mask holds 0 and 255 alone: a binary mask (ISIC's, Kvasir-SEG's), foreground or not."""
    return int(values.max(initial=0)) == 255 and not np.isin(values, (0, 255), invert=True).any()


def one_channel(values: np.ndarray) -> np.ndarray:
    """A mask's values, a grey one saved as RGB (every channel alike) as its one channel."""
    return values[..., 0] if values.ndim == 3 and (values[..., :1] == values).all() else values


def mask_values(image: Image.Image, path: Path) -> np.ndarray:
    """A mask's values (object ids or class numbers) as one channel: a single-channel mask's own, and the same
    saved as grey RGB; a binary mask's foreground as 1 (0/255, or a JPEG's values cut at 128); a colour mask's
    (CVAT's and Datumaro's exports) by its colours' lines in labelmap.txt, else by VOC's colour map (VOC's own masks
    saved as RGB; its void colour is 255). ValueError names a colour that is in neither."""
    if path.suffix.lower() in LOSSY_MASKS:
        return (np.asarray(image.convert("L")) >= 128).astype(np.uint8)
    if image.mode == "P":  # VOC's palette: the values are the classes, 255 its void; Carvana's black/white GIFs
        grey = np.asarray(image.convert("L"))
        return (grey > 0).astype(np.uint8) if binary_values(grey) else np.asarray(image)
    values = one_channel(np.asarray(image.convert("RGB") if image.mode in ("RGBA", "LA") else image))
    if values.ndim == 2:
        return (values > 0).astype(np.uint8) if binary_values(values) else values
    rgb = values.astype(np.int32)
    rows = labelmap(path.parent)
    if rows:
        table = {c: i for i, (_, c) in enumerate(rows) if len(c) == 3}
        where = f"{LABELMAP}"
    else:
        flat = voc_colours(256)
        table = {tuple(flat[3 * v:3 * v + 3]): v for v in range(256)}
        where = "VOC's colour map (add a labelmap.txt of `name:r,g,b::` lines)"
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values = np.zeros(keys.shape, np.uint8 if len(table) <= 256 else np.int32)
    # a mask holds a few colours: one comparison each (np.unique's inverse sorted every pixel, 30 ms a VOC mask)
    for k in np.unique(keys).tolist():
        colour = (k >> 16, (k >> 8) & 255, k & 255)
        if colour not in table:
            raise ValueError(f"colour {colour} is in no class of {where}")
        if table[colour]:
            values[keys == k] = table[colour]
    return values


def mask_ids(mask: np.ndarray) -> np.ndarray:
    """The object ids (or class values) a mask holds, in increasing order: not background (0), and not void (255)
    beside other values; a binary mask's 255 (0/255 masks) is its object."""
    ids = np.unique(mask)
    ids = ids[ids != 0]
    return ids[ids != VOID] if len(ids) > 1 else ids


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """One box per id in a mask (`mask_ids`' order)."""
    ids = mask_ids(mask)
    boxes = []
    for k in ids:
        ys, xs = np.nonzero(mask == k)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


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
