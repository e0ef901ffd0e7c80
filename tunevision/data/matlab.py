"""Labels kept in MATLAB files beside a folder of images. As Oxford Flowers-102 ships them: `imagelabels.mat` holds
one class number per image, in the order of the images' names, and `setid.mat` the numbers of the training,
validation and test images (torchvision's Flowers102 reads the same two files); class names come from a names file
or a map beside them where there is one, else they are the numbers. As Stanford Cars ships them: records of a file
name and a class number (`devkit/cars_train_annos.mat`, boxes beside them; `cars_test_annos_withlabels.mat`; or
`cars_annos.mat` with a test flag), the names in another file's list (`cars_meta.mat`'s `class_names`), as
torchvision's StanfordCars reads them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunevision.core.errors import TunevisionError
from tunevision.data.archives import FOLDER_SIGNS
from tunevision.data.images import is_image_name
from tunevision.data.layout import entries, split_in_name
from tunevision.data.sources import SOURCES, Dataset, Sample, Skipped, stratified_split
from tunevision.data.tables import names_beside, names_map

# the first letters of a split's index vector in a .mat file: Flowers-102's trnid / valid / tstid
SPLIT_KEYS = {"tr": "train", "val": "val", "ts": "test", "te": "test"}


@dataclass
class MatLabels:
    file: Path
    images: list[Path]      # in name order: label i is images[i]'s
    labels: np.ndarray      # class numbers, one per image
    splits: dict[str, np.ndarray]  # role -> 1-based image numbers, from a split file beside it (may be empty)


def _load(path: Path) -> dict[str, np.ndarray]:
    """A .mat file's arrays; {} for one that cannot be read (cut short, MATLAB 7.3's HDF5): it labels nothing."""
    from scipy.io import loadmat  # scipy comes with scikit-learn; only this reader needs it
    try:
        found = loadmat(path, squeeze_me=True)
    except Exception:  # noqa: BLE001  (scipy's reader raises IndexError, ValueError, MatReadError ... on junk)
        return {}
    return {k: v for k, v in found.items() if not k.startswith("__") and isinstance(v, np.ndarray)}


def _integer_vectors(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.int64) for k, v in values.items()
            if v.ndim == 1 and v.size and v.dtype.kind in "iuf" and np.all(v == np.round(v))}


def _image_folders(root: Path) -> list[tuple[Path, list[Path]]]:
    """(folder, its images in name order) for `root` and the folders in it that hold loose images."""
    found = []
    for folder in (root, *(d for d in entries(root) if d.is_dir())):
        images = [p for p in entries(folder) if p.is_file() and is_image_name(p.name)]
        if images:
            found.append((folder, images))
    return found


def mat_labels(root: Path) -> MatLabels | None:
    """The label vector of a .mat file in `root` (or, given the image folder itself, beside it) as long as a folder
    of images there is, with the split file's index vectors; None where there is none (most folders: only their
    .mat files are opened)."""
    mats = sorted(root.glob("*.mat")) if root.is_dir() else []
    if not mats and root.is_dir() and any(p.is_file() and is_image_name(p.name) for p in entries(root)):
        root = root.parent
        mats = sorted(root.glob("*.mat"))
    if not mats:
        return None
    folders = _image_folders(root)
    vectors = {f: _integer_vectors(_load(f)) for f in mats}
    for file, found in vectors.items():
        for labels in found.values():
            match = next((images for _, images in folders if len(images) == len(labels)), None)
            if match and labels.min() >= 0 and len(np.unique(labels)) >= 2:
                splits = {SPLIT_KEYS[prefix]: v for other, vs in vectors.items() if other != file
                          for key, v in vs.items() for prefix in SPLIT_KEYS
                          if key.lower().startswith(prefix) and v.min() >= 1 and v.max() <= len(labels)}
                return MatLabels(file, match, labels, splits)
    return None


@dataclass
class MatRecords:
    files: list[Path]       # the record files read
    paths: list[str]        # each record's image, found on disk
    labels: list[int]       # its class number
    roles: list[str]        # "train" / "val" per record from the file's name or a test flag, or "" for none
    names: list[str]        # class names by number - 1, or [] where no file lists them


MAX_FOLDERS = 8  # the folders of a dataset root that mat_records looks into
# the field of a record that holds its class, and the one that flags a test image (Stanford Cars' cars_annos.mat)
CLASS_FIELDS, TEST_FIELDS = ("class", "label", "labels", "category", "class_id"), ("test", "is_test")


def _records(values: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray | None] | None:
    """(image names, class numbers, test flags or None) of a struct array whose records name an image file and give
    a class number; None where a file holds none."""
    for v in values.values():
        fields = v.dtype.names or ()
        name_field = next((f for f in fields if v.size and isinstance(np.atleast_1d(v[f])[0], str)
                           and is_image_name(np.atleast_1d(v[f])[0])), None)
        class_field = next((f for f in fields if f.lower() in CLASS_FIELDS), None)
        if name_field is None or class_field is None:
            continue
        try:
            numbers = np.atleast_1d(v[class_field]).astype(np.int64)
        except (TypeError, ValueError):
            continue
        test = next((np.atleast_1d(v[f]).astype(bool) for f in fields if f.lower() in TEST_FIELDS), None)
        return [str(n) for n in np.atleast_1d(v[name_field])], numbers, test
    return None


def _class_names(values: dict[str, np.ndarray]) -> list[str]:
    """A list of class names (cars_meta.mat's `class_names`): a vector of strings, else []."""
    for v in values.values():
        if v.dtype.kind in "OU" and v.ndim == 1 and len(v) > 1 and all(isinstance(x, str) for x in v):
            return [x.strip() for x in v]
    return []


def _find_images(names: list[str], role: str, places: list[Path]) -> list[Path] | None:
    """Where records' image names are: under the first of `places` that holds most of them, a folder named for the
    records' split first (cars_test/ for the test records, whose names 00001.jpg ... cars_train/ holds too)."""
    ranked = sorted(places, key=lambda d: split_in_name(d) != role) if role else places
    for folder in ranked:
        found = [folder / n for n in names]
        if sum(p.is_file() for p in found[:50]) * 2 > min(50, len(found)):
            return found
    return None


def mat_records(root: Path, look_up: bool = True) -> MatRecords | None:
    """Stanford Cars' records in .mat files in `root` or a folder in it (its devkit/), with their images found;
    given a folder of loose images and `look_up`, those beside it; None where there are none."""
    inside = [d for d in entries(root) if d.is_dir()] if root.is_dir() else []
    # a dataset's few folders (images, devkit/), not the hundreds of a class-folder set, each listed in full
    folders = [root, *inside] if len(inside) <= MAX_FOLDERS else [root] if root.is_dir() else []
    mats = [f for d in folders for f in sorted(d.glob("*.mat"))]
    if not mats and look_up and root.is_dir() and any(p.is_file() and is_image_name(p.name) for p in entries(root)):
        return mat_records(root.parent, look_up=False)  # given cars_train/ itself: the records beside it
    if not mats:
        return None
    loaded = {f: _load(f) for f in mats}
    names = next((found for f in mats if (found := _class_names(loaded[f]))), [])
    paths, labels, roles, read = [], [], [], []
    for f in mats:
        records = _records(loaded[f])
        if records is None:
            continue
        files, numbers, test = records
        role = split_in_name(f)
        found = _find_images(files, role, [f.parent, root, *folders])
        if found is None:
            continue
        read.append(f)
        paths += [str(p) for p in found]
        labels += numbers.tolist()
        roles += ["val" if t else "train" for t in test] if test is not None else \
            ["val" if role in ("val", "test") else role] * len(found)
    if not read or len(set(labels)) < 2:
        return None
    return MatRecords(read, paths, labels, roles, names if len(names) >= max(labels) else [])


@FOLDER_SIGNS.register("mat")
def _holds_mat_labels(root: Path) -> bool:
    return mat_labels(root) is not None or mat_records(root) is not None


@SOURCES.register("mat")
def mat_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    root = Path(spec).expanduser()
    found = mat_labels(root)
    if found is None and (records := mat_records(root)):
        return _records_source(records, val_fraction, seed)
    if found is None:
        raise TunevisionError(f"{root}: no MATLAB label file (a vector of class numbers, one per image) beside a "
                              "folder of as many images")
    numbers = sorted(int(n) for n in np.unique(found.labels))
    keys = [str(n) for n in numbers]
    beside = found.file.parent
    names = names_map(beside, keys)[0] or dict(zip(keys, names_beside(beside, len(keys)) or keys))
    classes = [names[k] for k in keys]
    index = {n: i for i, n in enumerate(numbers)}
    paths = [str(p) for p in found.images]
    labels = [index[int(n)] for n in found.labels]
    where = f"{found.file.name}, images in {found.images[0].parent.name}/"
    if "train" in found.splits and ("val" in found.splits or "test" in found.splits):
        role = "val" if "val" in found.splits else "test"
        train = [Sample(paths[i - 1], labels[i - 1]) for i in found.splits["train"]]
        val = [Sample(paths[i - 1], labels[i - 1]) for i in found.splits[role]]
        used = set(found.splits["train"]) | set(found.splits[role])
        notes = [Skipped(paths[i], f"a {'test' if 'test' in found.splits and role == 'val' else 'listed'} image "
                                   "of the split file: not used by training")
                 for i in range(len(paths)) if i + 1 not in used]
        return Dataset(classes, train, val, f"MATLAB labels ({where}), their split", notes, explicit_split=True)
    train, val = stratified_split(list(zip(paths, labels)), val_fraction, seed)
    return Dataset(classes, train, val, f"MATLAB labels ({where}), seeded {val_fraction:.0%} validation split")


def _records_source(found: MatRecords, val_fraction: float, seed: int) -> Dataset:
    """Stanford Cars' records: their split where they give one (training and labelled test records), else seeded."""
    numbers = sorted(set(found.labels))
    keys = [str(n) for n in numbers]
    names = dict(zip(keys, [found.names[n - 1] for n in numbers])) if found.names and numbers[0] >= 1 else \
        names_map(found.files[0].parent, keys)[0] or dict(zip(keys, keys))
    index = {n: i for i, n in enumerate(numbers)}
    there = [Path(p).is_file() for p in found.paths]
    missing = [Skipped(p, f"named by {', '.join(f.name for f in found.files)} but not there")
               for p, ok in zip(found.paths, there) if not ok]
    samples = [Sample(p, index[n]) if ok else None for p, n, ok in zip(found.paths, found.labels, there)]
    where = f"MATLAB records ({', '.join(f.name for f in found.files)}" \
            f"{'; class names listed beside them' if found.names else ''})"
    if "train" in found.roles and "val" in found.roles:
        train = [s for s, r in zip(samples, found.roles) if s and r == "train"]
        val = [s for s, r in zip(samples, found.roles) if s and r == "val"]
        return Dataset([names[k] for k in keys], train, val, f"{where}, their split", missing, explicit_split=True)
    train, val = stratified_split([(s.path, s.label) for s in samples if s], val_fraction, seed)
    return Dataset([names[k] for k in keys], train, val, f"{where}, seeded {val_fraction:.0%} validation split",
                   missing)
