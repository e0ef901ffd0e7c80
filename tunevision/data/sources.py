"""Find the images and labels a user points at, split them, and decode each one once into a uint8 cache.

Layouts (decided by `discover`; names read by data/layout.py, any case, inside the folder an archive wraps):
  PATH/{train,val|valid|validation|test}/<class>/*   split given by the folders
  PATH/train/<class>/* + PATH/val/ of loose images   validation labelled by the table in it (Tiny ImageNet)
  PATH/<class>/*                                     stratified seeded split (`val_fraction`)
  PATH/<class>/{train,test}/*                        the split inside each class folder
  PATH/cat.0.jpg ... (or PATH/train/cat.0.jpg ...)   classes from the file names, seeded split
  FILE.csv with columns path,label[,split]          paths relative to the CSV (also PATH/ with such a table
                                                     beside folders of loose images: `tables.table_in`)
  mnist:DIR, cifar10:DIR                             the standard distribution files
Every file that cannot be used is listed in `skipped` with its reason before training starts.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry
from tunevision.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_square,
    is_image_content,
    is_image_name,
    square,
)
from tunevision.data.layout import (
    ID_LISTS,
    IMAGE_FOLDER_NAMES,
    assigned_splits,
    classes_from_names,
    entries,
    has_subfolders,
    id_listed_splits,
    is_leftover,
    is_output,
    listed_splits,
    split_dirs,
    split_lists,
    split_role,
    training_and_held_out,
    unwrap,
)
from tunevision.data.tables import LabelTable, names_map, read_label_table, table_in

CACHE_FORMAT = 2  # bump when the decoded representation changes, so old caches are not reused


@dataclass(frozen=True)
class Sample:
    path: str  # a file path, or "SOURCE#index" for images that live inside an archive
    label: int  # the class index; for multi-label data the first label's, or -1 for an image with none
    labels: tuple[int, ...] | None = None  # multi-label data: every label of the image (None: single-label data)

    def has(self, index: int) -> bool:
        return index in self.labels if self.labels is not None else self.label == index


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Dataset:
    """Classes plus train/val samples; `arrays` holds in-memory images for archive sources."""
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    layout: str
    skipped: list[Skipped] = field(default_factory=list)
    arrays: np.ndarray | None = None  # (N, H, W[, 3]) uint8 for mnist/cifar; samples index into it
    explicit_split: bool = False      # the data named its own validation set (folders, CSV column, archive)
    multilabel: bool = False          # samples carry any number of labels (`Sample.labels`)
    fixes: dict = field(default_factory=dict)  # what a --fixes file changed (see data/fixes.py)

    def evaluation_samples(self) -> list[Sample]:
        """What `evaluate` scores: the named validation split, or every image when there is none."""
        return self.val if self.explicit_split else sorted(self.train + self.val, key=lambda s: s.path)


SOURCES: Registry[Callable[[str, float, int], Dataset]] = Registry("data source")


def stratified_split(items: list[tuple[str, int]], val_fraction: float, seed: int
                      ) -> tuple[list[Sample], list[Sample]]:
    """Per-class seeded shuffle, at least one validation image per class with >= 2 images."""
    rng = random.Random(seed)
    train, val = [], []
    by_class: dict[int, list[str]] = {}
    for path, label in sorted(items):
        by_class.setdefault(label, []).append(path)
    for label, paths in sorted(by_class.items()):
        rng.shuffle(paths)
        n_val = max(1, round(len(paths) * val_fraction)) if len(paths) >= 2 else 0
        val += [Sample(p, label) for p in paths[:n_val]]
        train += [Sample(p, label) for p in paths[n_val:]]
    return train, val


LEFTOVER = "left by the system or a tool (hidden, __MACOSX/, ._ metadata), not data: passed over"
OWN_OUTPUT = "written by tunevision (runs, an audit, a bundle), not data: passed over"


def _scan_class_folders(root: Path) -> tuple[dict[str, list[str]], list[Skipped]]:
    """{class name: image paths} for root/<class>/**; non-images and empty classes are reported, and what tools
    left behind (hidden files, `__MACOSX/`) is listed as such without being opened."""
    classes: dict[str, list[str]] = {}
    skipped: list[Skipped] = []
    for entry in sorted(root.iterdir()):
        if is_leftover(entry.name):
            skipped.append(Skipped(str(entry), LEFTOVER))
            continue
        if entry.is_dir() and is_output(entry):
            skipped.append(Skipped(str(entry), OWN_OUTPUT))
            continue
        if not entry.is_dir():
            skipped.append(Skipped(str(entry), "not inside a class folder"))
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry):
            skipped += [Skipped(os.path.join(dirpath, d), LEFTOVER) for d in sorted(dirnames) if is_leftover(d)]
            dirnames[:] = sorted(d for d in dirnames if not is_leftover(d))
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                if is_leftover(name):
                    skipped.append(Skipped(p, LEFTOVER))
                elif is_image_name(name) or is_image_content(p):
                    files.append(p)
                else:
                    skipped.append(Skipped(p, "not an image file (neither its name nor its first bytes)"))
        if files:
            classes[entry.name] = files
        else:
            skipped.append(Skipped(str(entry), "empty class folder: no images, class ignored"))
    return classes, skipped


def _holds_images(folder: Path) -> bool:
    return any(is_image_name(f) for _, _, files in os.walk(folder) for f in files)


def _image_root(root: Path) -> Path:
    """The one folder of the images beside others without (DTD's images/<class>/ beside labels/ and imdb/), or
    named for them beside annotations that are images too (Oxford-IIIT Pet's images/ beside annotations/trimaps/);
    with class folders in it, or one flat folder whose file names carry the classes."""
    if split_dirs(root) or _loose_images(root):
        return root
    holders = [d for d in entries(root) if d.is_dir() and _holds_images(d)]
    if len(holders) > 1:
        holders = [d for d in holders if d.name.lower() in IMAGE_FOLDER_NAMES]
    if len(holders) != 1:
        return root
    folder = unwrap(holders[0])
    inside = entries(folder)
    if len(inside) == 1 and inside[0].is_dir():  # Kaggle's images/images/
        folder = inside[0]
    return folder if has_subfolders(folder) or _named_classes(folder) else root


def _loose_images(folder: Path) -> list[str]:
    return [str(p) for p in entries(folder) if is_image_name(p.name) and p.is_file()]


def _named_classes(folder: Path) -> tuple[Path, dict[str, list[str]]] | None:
    """A flat folder (no class folders in it) whose file names carry the classes: Kaggle's dogs-vs-cats train/,
    Oxford pets' images/."""
    if not folder.is_dir() or has_subfolders(folder):
        return None
    named = classes_from_names(_loose_images(folder))
    return (folder, named) if named else None


def named_images(root: Path) -> dict[str, list[str]]:
    """{class: files} where a folder's images carry their classes in their names (as `folder_source` reads it),
    else {}."""
    named = _named_classes(_image_root(unwrap(root)))
    return named[1] if named else {}


@SOURCES.register("folder")
def folder_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    given = Path(spec).expanduser()
    if not given.is_dir():
        raise TunevisionError(f"{given}: no such folder; point at a folder with one subfolder per class")
    root = _image_root(unwrap(given))
    ds = with_class_names(_folder_dataset(given, root, val_fraction, seed), root)
    if "class names from" not in ds.layout and (plain := numbered_names(ds.classes)):
        ds.classes = plain
        ds.layout += ", class names without their folders' numbers"
    return ds


def with_class_names(ds: Dataset, folder: Path) -> Dataset:
    """`ds` with its classes named by a map beside the data (`tables.names_map`: folders numbered 1..102 with a JSON
    of their names, Tiny ImageNet's WordNet ids and its words.txt), in the same order, where there is one."""
    names, where = names_map(folder, ds.classes)
    if names:
        ds.classes = [names[c] for c in ds.classes]
        ds.layout += f", class names from {where}"
    return ds


# what numbers class folders: CUB-200's and Caltech-256's `001.`, ImageNet's and Stanford Dogs' WordNet id
FOLDER_NUMBER = re.compile(r"^(\d+\.|n\d{8}-)(?=[^\W\d_])")  # a name after it: `1.5mm` keeps its number


def numbered_names(classes: list[str]) -> list[str]:
    """The class names less the number every folder's name starts with (`001.Black_footed_Albatross` ->
    `Black_footed_Albatross`, `n02085620-Chihuahua` -> `Chihuahua`) where that leaves them distinct; else []."""
    names = [FOLDER_NUMBER.sub("", c) for c in classes]
    numbered = len(classes) > 1 and all(FOLDER_NUMBER.match(c) for c in classes)
    return names if numbered and len(set(names)) == len(names) else []


def _folder_dataset(given: Path, root: Path, val_fraction: float, seed: int) -> Dataset:
    inside = f" in {root.relative_to(given)}/" if root != given else ""
    splits = split_dirs(root)
    # a split folder holds class folders: `train/` of loose images is the class of trains, not a split
    train_dir = splits["train"] if "train" in splits and has_subfolders(splits["train"]) else None
    held_out = [splits[role] for role in ("val", "test") if role in splits] if train_dir is not None else []
    # loose images labelled by a table in their folder: Tiny ImageNet's val/images/ + val/val_annotations.txt
    tables = {d: t for d in held_out if (t := table_in(d))}
    # a Kaggle-style test/ of loose, unlabelled images cannot validate anything
    val_dir = next((d for d in held_out if has_subfolders(d) or d in tables), None)
    notes = [Skipped(str(d), "a test split: not used by training (score a run on it with `tunevision evaluate "
                             "RUN FOLDER`)" if has_subfolders(d) else
                             "no class folders in it (unlabelled images?): not used for validation")
             for d in held_out if d is not val_dir]
    if val_dir in tables:
        ds = _with_validation_table(train_dir, tables[val_dir], f"{train_dir.name}/ folders{inside}", notes)
        if ds.val:
            return ds
    elif train_dir is not None and val_dir is not None:
        return _from_split_folders(train_dir, val_dir, f"{train_dir.name}/{val_dir.name} folders{inside}", notes)
    named = _named_classes(splits.get("train") if train_dir is None and "train" in splits else root)
    if named:
        folder, class_map = named
        named_files = {f for files in class_map.values() for f in files}
        skipped = [Skipped(p, "no class in its name") for p in _loose_images(folder) if p not in named_files]
        what = f"classes from file names{f' in {folder.name}/' if folder != root else ''} (cat.0.jpg -> cat)"
        notes = [Skipped(str(d), "no classes in its file names: not used") for d in entries(root)
                 if d.is_dir() and d != folder and split_role(d.name) in ("val", "test")]
    else:
        class_map, skipped = _scan_class_folders(train_dir or root)
        what = f"class folders in {train_dir.name}/" if train_dir is not None else "class folders"
    classes = sorted(class_map)
    if len(classes) > 1 and all(split_role(c) for c in classes):  # never learn to tell train from test
        raise TunevisionError(f"{given}: its folders ({', '.join(classes)}) are splits, not classes; put one folder "
                              "per class in each (train/<class>/...), or a label table (CSV) beside the images")
    index = {c: i for i, c in enumerate(classes)}
    # <class>/train/ + <class>/test/, else lists naming the split (Oxford-IIIT Pet's, Food-101's meta/)
    inner, how = (None, "") if named else \
        (_split_inside_classes(class_map, train_dir or root), "each with its own split folders")
    if not inner and train_dir is None:
        inner, how = _listed_split(named[0] if named else root, class_map)
    if inner:
        train = [Sample(p, index[c]) for c in classes for p in class_map[c] if inner[p] == "train"]
        val = [Sample(p, index[c]) for c in classes for p in class_map[c] if inner[p] == "val"]
        unused = [Skipped(p, "in no training or validation list: not used") for p, split in inner.items()
                  if split == "unused"]
        return Dataset(classes, train, val, f"{what}{inside}, {how}", skipped + unused + notes, explicit_split=True)
    train, val = stratified_split([(p, index[c]) for c in classes for p in class_map[c]], val_fraction, seed)
    return Dataset(classes, train, val, f"{what}{inside}, seeded {val_fraction:.0%} validation split",
                   skipped + notes)


def _from_split_folders(train_dir: Path, val_dir: Path, layout: str, notes: list[Skipped]) -> Dataset:
    """train/<class>/ and val/<class>/: the classes are the training folder's."""
    train_map, skipped = _scan_class_folders(train_dir)
    val_map, val_skipped = _scan_class_folders(val_dir)
    classes = sorted(train_map)
    for name in sorted(set(val_map) - set(train_map)):
        val_skipped += [Skipped(p, f"class {name!r} has no training folder") for p in val_map.pop(name)]
    index = {c: i for i, c in enumerate(classes)}
    train = [Sample(p, index[c]) for c in classes for p in train_map[c]]
    val = [Sample(p, index[c]) for c in sorted(val_map) for p in val_map[c]]
    return Dataset(classes, train, val, layout, skipped + val_skipped + notes, explicit_split=True)


def _with_validation_table(train_dir: Path, table: Path, layout: str, notes: list[Skipped]) -> Dataset:
    """train/<class>/ and a held-out folder of loose images labelled by a table in it: the classes are the training
    folder's, a row of another class is left out with its reason (no validation image at all: not this layout)."""
    train_map, skipped = _scan_class_folders(train_dir)
    classes = sorted(train_map)
    index = {c: i for i, c in enumerate(classes)}
    train = [Sample(p, index[c]) for c in classes for p in train_map[c]]
    val, val_skipped = _table_samples(read_label_table(table), classes, False)
    return Dataset(classes, train, val, f"{layout}, validation as {table.parent.name}/{table.name} labels it",
                   skipped + val_skipped + notes, explicit_split=True)


def _listed_split(folder: Path, class_map: dict[str, list[str]]) -> tuple[dict[str, str] | None, str]:
    """({image: 'train' | 'val' | 'unused'}, how) where split lists beside the images name them: in their folder,
    the one above it or a folder beside them (Oxford-IIIT Pet's annotations/trainval.txt and test.txt); else
    (None, '')."""
    files = [f for fs in class_map.values() for f in fs]
    for place in (folder, folder.parent, *(d for d in entries(folder.parent) if d.is_dir() and d != folder)):
        lists = split_lists(place)
        splits = listed_splits(lists, files)
        if splits:
            pair = training_and_held_out(lists)
            return dict(zip(files, splits)), f"split as {' and '.join(p.name for p in pair)} in {place.name}/ list it"
        splits = id_listed_splits(place, files)
        if splits:
            return dict(zip(files, splits)), f"split as {' and '.join(ID_LISTS)} in {place.name}/ number it"
    return None, ""


def _split_inside_classes(class_map: dict[str, list[str]], base: Path) -> dict[str, str] | None:
    """{image: 'train' | 'val' | 'unused'} where every image lies in a split folder inside its class folder
    (`cats/train/`, `cats/test/`) and the classes hold a training and a held-out split; else None."""
    placed = [(f, Path(f).relative_to(base / c).parts) for c, fs in class_map.items() for f in fs]
    roles = [split_role(parts[0]) if len(parts) > 1 else "" for _, parts in placed]
    splits = None if "" in roles else assigned_splits(roles)
    return {f: split for (f, _), split in zip(placed, splits)} if splits else None


def _table_samples(table: LabelTable, names: list[str], multilabel: bool) -> tuple[list[Sample], list[Skipped]]:
    """A table's rows as samples of `names`; a row with a label not among them is skipped with its reason."""
    index = {c: i for i, c in enumerate(names)}
    samples, skipped = [], [Skipped(p, reason) for p, reason in table.problems]
    for p, ls in zip(table.paths, table.labels):
        unknown = [x for x in ls if x not in index]
        if unknown:
            skipped.append(Skipped(p, f"class {unknown[0]!r} has no training image"))
        elif multilabel:
            samples.append(Sample(p, index[ls[0]] if ls else -1, tuple(index[x] for x in ls)))
        else:
            samples.append(Sample(p, index[ls[0]]))
    return samples, skipped


def split_tables_source(train_csv: Path, val_csv: Path, images: str = "", multilabel: bool = False,
                        label_column: str = "") -> Dataset:
    """A training and a validation table (one per split folder): the split they give, the training table's
    classes."""
    train_table = read_label_table(train_csv, images, multilabel, label_column)
    multilabel = multilabel or train_table.multilabel
    val_table = read_label_table(val_csv, images, multilabel, label_column)
    train, skipped = _table_samples(train_table, train_table.names, multilabel)
    val, val_skipped = _table_samples(val_table, train_table.names, multilabel)
    ds = Dataset(train_table.names, train, val, f"{train_table.layout} and {val_csv.parent.name}/{val_csv.name}",
                 skipped + val_skipped, explicit_split=True, multilabel=multilabel)
    return with_class_names(ds, train_csv.parent)


@SOURCES.register("csv")
def csv_source(spec: str, val_fraction: float, seed: int, images: str = "", multilabel: bool = False,
               label_column: str = "") -> Dataset:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TunevisionError(f"{path}: no such CSV file")
    table = read_label_table(path, images, multilabel, label_column)
    samples, skipped = _table_samples(table, table.names, table.multilabel)
    if any(table.splits):
        train = [s for s, split in zip(samples, table.splits) if split == "train"]
        val = [s for s, split in zip(samples, table.splits) if split == "val"]
        ds = Dataset(table.names, train, val, f"{table.layout}, split column", skipped, explicit_split=True,
                     multilabel=table.multilabel)
        return with_class_names(ds, path.parent)
    if table.multilabel:
        train, val = multilabel_split(samples, len(table.names), val_fraction, seed)
    else:
        train, val = stratified_split([(s.path, s.label) for s in samples], val_fraction, seed)
    ds = Dataset(table.names, train, val, f"{table.layout}, seeded {val_fraction:.0%} validation split", skipped,
                 multilabel=table.multilabel)
    return with_class_names(ds, path.parent)


def multilabel_split(samples: list[Sample], n_labels: int, val_fraction: float, seed: int
                     ) -> tuple[list[Sample], list[Sample]]:
    """A seeded random split in which every label with two or more images has one in training and one in
    validation where it can (a rare label drawn only into validation is moved back)."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(samples) * val_fraction))
    return labels_in_training(samples, n_labels, order[n_val:], order[:n_val])


def labels_in_training(samples: list[Sample], n_labels: int, train_idx, val_idx
                       ) -> tuple[list[Sample], list[Sample]]:
    """The split of `samples` by index, with a label that has two or more images but none in training given one
    back from validation (the first drawn)."""
    train, val, order = set(train_idx), set(val_idx), [*val_idx]
    for k in range(n_labels):
        carriers = [i for i in order if samples[i].has(k)]
        if len(carriers) >= 2 and not any(samples[i].has(k) for i in train):
            val.discard(carriers[0])
            train.add(carriers[0])
    return [samples[i] for i in sorted(train)], [samples[i] for i in sorted(val)]


def _read_archive(arrays: np.ndarray, key: str, size: int, fit: str) -> np.ndarray:
    return square(Image.fromarray(arrays[int(key.rsplit("#", 1)[1])]), size, fit)


def cache_key(samples: list[Sample], size: int, arrays: np.ndarray | None, fit: str = "crop") -> str:
    # crop keeps the key it always had, so caches written before `fit` existed stay valid
    h = hashlib.sha1(f"v{CACHE_FORMAT}:{size}{'' if fit == 'crop' else ':' + fit}".encode())
    if arrays is not None:
        h.update(hashlib.sha1(np.ascontiguousarray(arrays).data).digest())
    for s in samples:
        h.update(s.path.encode())
        if arrays is None:
            try:
                st = os.stat(s.path)
                # inode and ctime too: a file replaced by another of the same size and mtime (cp -p, touch -r)
                # has a new inode or ctime, which no user tool can set back
                h.update(f":{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}".encode())
            except OSError:
                h.update(b":missing")
    return h.hexdigest()[:20]


def read_cached_images(npy: Path, meta: Path, n: int, size: int, log) -> tuple[np.ndarray, list[Skipped]] | None:
    """The cached array and its failures, if both files are whole and match what this run expects; else the
    damaged pair is deleted (and reported) so that it is rebuilt."""
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="r")
        bad = [Skipped(**d) for d in info["skipped"]]
        expected = (n - len(bad), size, size, 3)
        if images.shape != expected or images.dtype != np.uint8 or npy.stat().st_size != info["bytes"]:
            raise ValueError(f"shape {images.shape}, {npy.stat().st_size} bytes; expected {expected}, "
                             f"{info['bytes']} bytes")
        return images, bad
    except Exception as e:  # truncated npy ("mmap length is greater than file size"), bad JSON, old format
        npy.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        if log:
            log.info(f"[yellow]damaged image cache {npy} ({type(e).__name__}: {str(e)[:80]}): deleted, rebuilding[/]")
        return None


def write_cached_images(npy: Path, meta: Path, images: np.ndarray, bad: list[Skipped], n: int, log) -> bool:
    """Store the array, then its description (whose byte count marks the array as whole); False if not written."""
    tmp = npy.with_name(npy.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, npy)
        _write_meta(meta, bad, n, npy)
        return True
    except OSError as e:  # a full or read-only cache folder costs speed next time, not this run
        _cache_not_written(npy, tmp, e, log)
        return False


def _write_meta(meta: Path, bad: list[Skipped], n: int, npy: Path) -> None:
    """The array's description, written last: its byte count marks the array as whole."""
    tmp = meta.with_name(meta.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(json.dumps({"skipped": [b.__dict__ for b in bad], "n": n, "bytes": npy.stat().st_size}))
        os.replace(tmp, meta)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _claim_file(npy: Path) -> Path:
    return npy.with_suffix(".claim")


def _alive(pid: int) -> bool:
    if hasattr(os, "WNOHANG"):
        try:  # this process's own child (the early decoder): reaped here once it exits, else it stays a zombie
            return os.waitpid(pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def claim_holder(npy: Path) -> int | None:
    """The live process, other than this one, that is decoding the images of `npy` (see `claim`), if any."""
    try:
        pid = int(_claim_file(npy).read_text())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def claim(npy: Path) -> bool:
    """Mark the images of `npy` as being decoded by this process, so that `load_images` in another waits for
    them instead of decoding them a second time; False if a live process holds them already. A claim left by a
    killed process is taken over."""
    path = _claim_file(npy)
    if claim_holder(npy) is not None:
        return False
    path.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(str(os.getpid()))
        os.link(tmp, path)  # atomic, and refused if another process claimed it meanwhile
        return True
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def release(npy: Path) -> None:
    path = _claim_file(npy)
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text()) == os.getpid():
            path.unlink()


def wait_for_claim(npy: Path, poll_s: float = 0.02) -> None:
    """Return once no other live process is decoding the images of `npy`."""
    while claim_holder(npy) is not None:
        time.sleep(poll_s)


def load_images(samples: list[Sample], size: int, *, cache_dir: Path | None, arrays: np.ndarray | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None, fit: str = "crop",
                progress: Callable[[int], None] | None = None, log=None) -> tuple[np.ndarray, list[Skipped]]:
    """Decode every sample once to (N, size, size, 3) uint8; return the images that worked and the failures.

    With a cache folder, the images are decoded straight into `<cache>/images/<key>.npy` (key: paths, sizes,
    mtimes and `size`) and memory-mapped from it, then and on later runs, so re-runs never decode again; a
    folder that cannot hold it costs speed next time, not this run. `fit`: crop or squash (`images.square`).
    Returned rows follow `samples` order with the failures removed.
    """
    if cache_dir is not None:
        npy = cache_file(samples, size, cache_dir, arrays, fit)
        wait_for_claim(npy)
        cached = read_cached_images(npy, npy.with_suffix(".json"), len(samples), size, log)
        if cached is None:
            cached = decode_to_cache(samples, size, npy, arrays=arrays, max_pixels=max_pixels, workers=workers,
                                     fit=fit, progress=progress, log=log)
        elif progress:
            progress(len(samples))
        if cached is not None:
            return cached
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    ok, bad = decode_rows(samples, out, arrays=arrays, max_pixels=max_pixels, workers=workers, fit=fit,
                          progress=progress)
    return (out if ok.all() else out[ok]), bad


def decode_rows(samples: list[Sample], out: np.ndarray, *, arrays: np.ndarray | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None, fit: str = "crop",
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[Skipped]]:
    """Decode sample i into out[i]; return which rows hold an image and the failures, sorted by path."""
    size = out.shape[1]
    ok = np.ones(len(samples), dtype=bool)
    bad: list[Skipped] = []

    def work(i: int) -> None:
        s = samples[i]
        try:
            out[i] = (_read_archive(arrays, s.path, size, fit) if arrays is not None
                      else decode_square(s.path, size, max_pixels=max_pixels, fit=fit))
        except (ImageError, OSError) as e:
            ok[i] = False
            bad.append(Skipped(s.path, str(e)))

    # Pillow releases the GIL while decoding, so threads use every core without pickling images.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for _ in pool.map(work, range(len(samples))):
            if progress:
                progress(1)
    bad.sort(key=lambda b: b.path)
    return ok, bad


def cache_file(samples: list[Sample], size: int, cache_dir: Path, arrays: np.ndarray | None = None,
               fit: str = "crop") -> Path:
    """The image cache file of `samples` decoded at `size` (its description beside it, as .json)."""
    return Path(cache_dir) / "images" / f"{cache_key(samples, size, arrays, fit)}.npy"


def decode_to_cache(samples: list[Sample], size: int, npy: Path, *, arrays: np.ndarray | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None, fit: str = "crop",
                    progress: Callable[[int], None] | None = None, log=None
                    ) -> tuple[np.ndarray, list[Skipped]] | None:
    """Decode into the image cache file `npy` (`cache_file`) itself and return it memory-mapped, as `load_images`
    does: no copy in memory to write out (flowers5's 0.9 GB took 2.4 s to write from memory after a 4.7 s decode).
    None, before anything is decoded, where the folder cannot hold the file (full, read-only)."""
    meta, tmp = npy.with_suffix(".json"), npy.with_name(f"{npy.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), size, size, 3))
        if hasattr(os, "posix_fallocate"):  # a full disk fails here, not as SIGBUS on a page of the mapping
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        _cache_not_written(npy, tmp, e, log)
        return None
    try:
        ok, bad = decode_rows(samples, out, arrays=arrays, max_pixels=max_pixels, workers=workers, fit=fit,
                              progress=progress)
    except BaseException:  # Ctrl-C, SIGTERM: no half-written file stays behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if not ok.all():  # rare: the cache holds only the images that decoded
        images = np.ascontiguousarray(out[ok])
        del out
        with contextlib.suppress(OSError):
            tmp.unlink()
        write_cached_images(npy, meta, images, bad, len(samples), log)
        return images, bad
    try:
        os.replace(tmp, npy)
        _write_meta(meta, bad, len(samples), npy)
    except OSError as e:
        _cache_not_written(npy, tmp, e, log)
        return out, bad  # the decoded pages stay mapped, though their file is gone
    del out  # no msync: the pages stay in memory for this run; the kernel writes them back in its own time
    return np.load(npy, mmap_mode="r"), bad  # read-only, as a cache read later is


def _cache_not_written(npy: Path, tmp: Path, e: OSError, log) -> None:
    for path in (tmp, npy):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    if log:
        log.info(f"[yellow]image cache not written ({npy.parent}: {e.strerror or e}); continuing[/]")


def relabel(samples: list[Sample], classes: list[str], known: list[str]) -> list[Sample]:
    """Samples labelled by index into `classes`, relabelled by index into `known` (a model's classes); samples of
    classes `known` lacks are left out."""
    index = {c: i for i, c in enumerate(known)}
    if samples and samples[0].labels is not None:  # multi-label: unknown labels go, the image stays
        out = []
        for s in samples:
            labels = tuple(index[classes[i]] for i in s.labels if classes[i] in index)
            out.append(Sample(s.path, labels[0] if labels else -1, labels))
        return out
    return [Sample(s.path, index[classes[s.label]]) for s in samples if classes[s.label] in index]


def drop_skipped(samples: list[Sample], skipped: list[Skipped]) -> list[Sample]:
    gone = {s.path for s in skipped}
    return [s for s in samples if s.path not in gone]


def channel_stats(images: np.ndarray, n: int = 2000, seed: int = 0
                  ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std, in [0, 1] units, of up to `n` uint8 images (N, H, W, 3), sampled evenly."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for chunk in np.array_split(idx, max(1, len(idx) // 64)):  # chunks: 2,000 float images would not fit
        x = np.asarray(images[chunk], dtype=np.float64).reshape(-1, 3) / 255.0
        total, squares, count = total + x.sum(0), squares + (x * x).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 1e-6))
    return tuple(round(float(v), 5) for v in mean), tuple(round(float(v), 5) for v in std)
