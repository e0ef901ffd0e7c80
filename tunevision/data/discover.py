"""`discover`: any data spec a user gives (a folder, a CSV, `mnist:DIR`, `cifar10:DIR`, `npz:FILE`) to a Dataset.

It sits above both the folder/CSV sources and the archive readers, so that neither imports the other."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError

# importing matlab registers its mat: in SOURCES (as importing archives registers mnist:, cifar10: and npz:, and
# pixels its pixels:)
from tunevision.data import matlab  # noqa: F401
from tunevision.data.annotated import split_indices
from tunevision.data.annotations import read_scene_data, semantic_masks, sniff_format
from tunevision.data.archives import archive_in
from tunevision.data.fixes import apply_fixes
from tunevision.data.layout import unwrap
from tunevision.data.pixels import pixel_table
from tunevision.data.sources import (
    SOURCES,
    Dataset,
    Sample,
    Skipped,
    labels_in_training,
    named_images,
    split_tables_source,
)
from tunevision.data.tables import is_table, read_label_table, split_tables, table_in


def source_prefix(spec: str) -> str | None:
    """The registered source a `prefix:` spec names (`mnist:DIR`, `cifar10:DIR`, `npz:FILE`), or None."""
    prefix, sep, _ = spec.partition(":")
    return prefix if sep and prefix in SOURCES and len(prefix) > 1 else None  # len>1: Windows drive letters are paths


def discover(spec: str, *, val_fraction: float = 0.2, seed: int = 0, images: str = "",
             multilabel: bool = False, label_column: str = "") -> Dataset:
    """Dispatch on the spec's prefix (`mnist:`, `cifar10:`), a table's suffix (.csv, .tsv, .txt: of paths and labels,
    or of pixel rows) or `.npz`, the annotations a folder holds when multi-label data is asked for (its objects'
    classes), the archive files it holds (MNIST's idx files, CIFAR-10's batches, tables of pixel rows), the label
    table a folder without class folders comes with (`tables.table_in`), or class folders."""
    prefix = source_prefix(spec)
    if prefix:
        return SOURCES.get(prefix)(spec.partition(":")[2], val_fraction, seed)
    if is_table(spec):
        if pixel_table(Path(spec).expanduser()):
            return SOURCES.get("pixels")(spec, val_fraction, seed)
        if multilabel and sniff_format(Path(spec).expanduser()):  # a table of boxes: a row per box, not per image
            return objects_as_labels(Path(spec).expanduser(), val_fraction, seed)
        return SOURCES.get("csv")(spec, val_fraction, seed, images, multilabel, label_column)
    if spec.lower().endswith(".npz"):
        return SOURCES.get("npz")(spec, val_fraction, seed)
    root = unwrap(Path(spec).expanduser())
    if multilabel and sniff_format(root):
        return objects_as_labels(root, val_fraction, seed)
    archive = archive_in(root)
    if archive:  # inside the folder a download wraps them in, too
        return SOURCES.get(archive)(str(root), val_fraction, seed)
    tables = folder_tables(root, label_column)
    if tables and tables[1]:
        return split_tables_source(*tables, images=images, multilabel=multilabel, label_column=label_column)
    if tables:
        return SOURCES.get("csv")(str(tables[0]), val_fraction, seed, images, multilabel, label_column)
    folders = SOURCES.get("folder")(spec, val_fraction, seed)
    return folders_as_labels(folders) if multilabel else folders


LABEL_JOINS = re.compile(r"[_+,\s]+")  # `black_jeans`, `red+dress`: the words of a folder named for two labels


def folders_as_labels(ds: Dataset) -> Dataset:
    """Class folders as multi-label data (`--task multilabel`): each folder's words are its images' labels where
    every folder's name joins two or more and some word names more than one folder (`black_jeans/`, `red_dress/`,
    as in Keras' multi-label tutorial), else each folder is the one label of its images."""
    words = [sorted({w for w in LABEL_JOINS.split(c) if w}) for c in ds.classes]
    joined = all(len(ws) > 1 for ws in words) and len({w for ws in words for w in ws}) < sum(map(len, words))
    if not joined:
        words = [[c] for c in ds.classes]
    labels = sorted({w for ws in words for w in ws})
    index = [tuple(labels.index(w) for w in ws) for ws in words]
    train, val = ([Sample(s.path, index[s.label][0], index[s.label]) for s in part] for part in (ds.train, ds.val))
    what = "the words of each folder's name" if joined else "each folder"
    return dataclasses.replace(ds, classes=labels, train=train, val=val, layout=f"{ds.layout}, {what} as labels",
                               multilabel=True)


def objects_as_labels(root: Path, val_fraction: float, seed: int) -> Dataset:
    """Multi-label data from boxes or masks (`--task multilabel` on a VOC, COCO or YOLO folder): each image
    labelled with the classes of its objects, none for an image without any (VOC2007's classification benchmark
    from its detection annotations); the annotations' own split where they give one."""
    data = read_scene_data(root)
    samples = []
    for it in data.items:
        labels = tuple(sorted({int(k) for k in it.labels}))
        samples.append(Sample(str(it.image), labels[0] if labels else -1, labels))
    splits = [it.split for it in data.items]
    skipped = [Skipped(str(f), reason) for f, reason in data.problems]
    layout = f"{data.format} annotations, each image labelled with its objects' classes"
    if "train" in splits and "val" in splits:
        train = [s for s, split in zip(samples, splits) if split == "train"]
        val = [s for s, split in zip(samples, splits) if split == "val"]
        return Dataset(data.classes, train, val, f"{layout}, their split", skipped, explicit_split=True,
                       multilabel=True)
    # the split a detector or segmenter draws on the same data, so that the audit's leakage is that run's
    train, val = labels_in_training(samples, len(data.classes), *split_indices(data.items, val_fraction, seed))
    return Dataset(data.classes, train, val, f"{layout}, seeded {val_fraction:.0%} validation split", skipped,
                   multilabel=True)


def folder_tables(root: Path, label_column: str = "") -> tuple[Path, Path | None] | None:
    """The label tables a folder's images come with: one in each split folder (training, validation), or one for
    them all (and None), or None where the folders hold the classes."""
    pair = split_tables(root, label_column)
    if pair:
        return pair
    table = table_in(root, label_column=label_column)
    return (table, None) if table else None


def discover_run(cfg: RunConfig) -> Dataset:
    """The dataset a run trains on: its data spec discovered and split by the run's seed, its --fixes applied."""
    ds = discover(cfg.data.data, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, images=cfg.data.images,
                  multilabel=cfg.data.task == "multilabel", label_column=cfg.data.label_column)
    if cfg.data.fixes:
        ds.fixes = apply_fixes(ds, cfg.data.fixes, cfg.data.data)
    return ds


def task_name_for_data(cfg: RunConfig) -> str:
    """The configured task, or for 'auto': found from the data's content (annotation files: detect)."""
    if cfg.data.task != "auto":
        return cfg.data.task
    source = cfg.data.data
    path = Path(source).expanduser()
    if source_prefix(source) or pixel_table(path) or archive_in(unwrap(path)):
        return "classify"
    fmt = sniff_format(path)  # annotations (a box table included): class maps are for a segmenter, boxes a detector
    if fmt and not _names_label_more(path, fmt):
        return "segment" if fmt == "masks" and semantic_masks(path) else "detect"
    label_column = cfg.data.label_column
    tables = None if is_table(source) else folder_tables(unwrap(path), label_column)
    table = source if is_table(source) else str(tables[0]) if tables else ""
    # several labels in a row, or one-hot columns: multi-label
    return "multilabel" if table and read_label_table(table, cfg.data.images, label_column=label_column).multilabel \
        else "classify"


def _names_label_more(path: Path, fmt: str) -> bool:
    """Whether images whose names carry two or more classes come with boxes or masks for fewer than nine in ten of
    them (Oxford-IIIT Pet: its 37 breeds in the names, head boxes and trimaps for half the photos): then a user
    means the names' classes, and `--task detect` still reads the boxes."""
    named = named_images(path)
    if not named:
        return False
    try:
        annotated = len(read_scene_data(path, fmt).items)
    except TunevisionError:
        return True
    return annotated < 0.9 * sum(map(len, named.values()))
