"""Labels kept in MATLAB files beside a folder of images, as Oxford Flowers-102 ships them: `imagelabels.mat` holds
one class number per image, in the order of the images' names, and `setid.mat` the numbers of the training,
validation and test images (torchvision's Flowers102 reads the same two files). Class names come from a names file
or a JSON map beside them where there is one, else they are the numbers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunevision.core.errors import TunevisionError
from tunevision.data.archives import FOLDER_SIGNS
from tunevision.data.images import is_image_name
from tunevision.data.layout import entries
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


@FOLDER_SIGNS.register("mat")
def _holds_mat_labels(root: Path) -> bool:
    return mat_labels(root) is not None


@SOURCES.register("mat")
def mat_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    root = Path(spec).expanduser()
    found = mat_labels(root)
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
