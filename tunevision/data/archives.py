"""Data sources that are archives rather than folders: MNIST's idx files, CIFAR-10's and CIFAR-100's batches, and
.npz arrays (what `tunevision.fit((images, labels))` writes). Each registers a `prefix:` in `data.SOURCES`."""
from __future__ import annotations

import gzip
import hashlib
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry
from tunevision.data.images import is_image_name
from tunevision.data.sources import SOURCES, Dataset, Sample, stratified_split
from tunevision.data.tables import names_beside

# The archive formats a plain folder may hold, each told by its files' names: `tunevision train DIR` on a folder
# of MNIST's or CIFAR-10's distribution files reads them as the prefixed spec would, instead of finding no class
# folder in it
FOLDER_SIGNS: Registry[Callable[[Path], bool]] = Registry("archive format")


@FOLDER_SIGNS.register("mnist")
def _holds_mnist(root: Path) -> bool:
    return any(root.glob("*-images[-.]idx*-ubyte*")) and any(root.glob("*-labels[-.]idx*-ubyte*"))


CIFAR_FOLDERS = ("cifar-10-batches-py", "cifar-100-python", "cifar-10-batches-bin")


def _cifar_root(root: Path) -> Path | None:
    """The folder of CIFAR batches at or just under `root` (the archives unpack into a folder of their own)."""
    for folder in (root, *(root / name for name in CIFAR_FOLDERS)):
        # CIFAR-100's `meta` is too common a name alone: with its `train` beside it
        if (folder / "batches.meta").is_file() or (folder / "batches.meta.txt").is_file() or (
                (folder / "meta").is_file() and (folder / "train").is_file()):
            return folder
    return None


@FOLDER_SIGNS.register("cifar10")
def _holds_cifar10(root: Path) -> bool:
    return _cifar_root(root) is not None


def archive_in(root: Path) -> str | None:
    """The SOURCES prefix of the archive format a folder holds at its top level, or None (class folders)."""
    return next((name for name in FOLDER_SIGNS if FOLDER_SIGNS.get(name)(root)), None) if root.is_dir() else None


def archive_dataset(name: str, arrays: np.ndarray, labels: np.ndarray, classes: list[str],
                    train_idx: Iterable[int], val_idx: Iterable[int], layout: str) -> Dataset:
    train = [Sample(f"{name}#{i}", int(labels[i])) for i in train_idx]
    val = [Sample(f"{name}#{i}", int(labels[i])) for i in val_idx]
    return Dataset(classes, train, val, layout, arrays=arrays, explicit_split="official" in layout)


def _read_idx(path: Path) -> np.ndarray:
    """MNIST's idx format: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, then the data; anything else
    (cut short, another dtype, a stray file) is one line naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise TunevisionError(f"{path}: unreadable ({e}); re-download the MNIST files") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise TunevisionError(f"{path}: not an idx file of uint8 (its first 4 bytes are {raw[:4].hex() or 'missing'},"
                              " expected 0000 08 01..04); re-download the MNIST files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise TunevisionError(f"{path}: {len(raw):,} bytes, but its header ({' x '.join(map(str, dims))}) needs "
                              f"{expected:,}: the file is {'cut short' if len(raw) < expected else 'too long'}; "
                              "re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise TunevisionError(f"{images_path}: expected N x H x W images and N labels, got {images.shape} and "
                              f"{labels.shape}")
    if len(images) != len(labels):
        raise TunevisionError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; "
                              "they must pair one to one")
    # MNIST and Fashion-MNIST hold 10 classes, EMNIST up to 62: far more is a damaged or foreign label file
    if labels.size and labels.max() >= 100:
        raise TunevisionError(f"{labels_path}: label {int(labels.max())} at item {int(labels.argmax())}; MNIST-like "
                              "labels are class indices under 100 (MNIST 0..9, EMNIST up to 61)")
    return images, labels.astype(np.int64)


@SOURCES.register("mnist")
def mnist_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    root = Path(spec).expanduser()

    def find(kind: str, part: str) -> Path | None:  # `-idx` as distributed, `.idx` as Kaggle's copy names them
        hits = sorted(root.glob(f"{part}*-{kind}[-.]idx*-ubyte*"))
        return hits[0] if hits else None

    test = "t10k" if find("images", "t10k") else "test"
    pairs = [(find("images", p), find("labels", p)) for p in ("train", test)]
    pairs = [(i, l) for i, l in pairs if i and l]
    if not pairs:
        raise TunevisionError(f"{root}: no MNIST files (*-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz])")
    arrays = [_mnist_pair(i, l) for i, l in pairs]
    if len({a.shape[1:] for a, _ in arrays}) > 1:
        raise TunevisionError(f"{root}: the train and test images differ in size ({arrays[0][0].shape[1:]} vs "
                              f"{arrays[1][0].shape[1:]})")
    images = np.concatenate([a for a, _ in arrays])
    labels = np.concatenate([l for _, l in arrays])
    # MNIST's digits, or as many classes as the labels hold (EMNIST's letters); Fashion-MNIST's names from a
    # names file beside the files (tables.names_beside), as its files are MNIST's in all but their pictures
    count = int(labels.max()) + 1 if len(labels) else 10
    classes = names_beside(root, count) or [str(d) for d in range(max(count, 10))]
    if len(pairs) == 2:  # both official files: use the official split
        n_train = len(arrays[0][1])
        return archive_dataset("mnist", images, labels, classes, range(n_train),
                               range(n_train, len(labels)), "MNIST official train/test split")
    tr, va = stratified_split([(f"{i:08d}", int(l)) for i, l in enumerate(labels)], val_fraction, seed)
    return archive_dataset("mnist", images, labels, classes, [int(s.path) for s in tr],
                           [int(s.path) for s in va], f"MNIST {pairs[0][0].name}, seeded split")


@SOURCES.register("npz")
def npz_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    """An .npz with `images` (N x H x W [x 3] uint8) and `labels` (N class names): `tunevision.fit((x, y))`."""
    path = Path(spec).expanduser()
    try:
        with np.load(path) as f:
            images, names = f["images"], [str(v) for v in f["labels"]]
    except (OSError, KeyError, ValueError) as e:
        raise TunevisionError(f"{path}: not an .npz with arrays 'images' and 'labels' ({e})") from None
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names])
    tr, va = stratified_split([(f"{i:08d}", int(l)) for i, l in enumerate(labels)], val_fraction, seed)
    return archive_dataset("npz", images, labels, classes, [int(s.path) for s in tr], [int(s.path) for s in va],
                           f"arrays ({len(images)} images), seeded {val_fraction:.0%} validation split")


class ArraysOnly(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts of bytes, lists and numpy arrays) and nothing else: a pickle that names any
    other callable (os.system, say) is refused instead of run."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


@SOURCES.register("cifar10")
def cifar10_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    """CIFAR-10 (python pickles or the binary version) or CIFAR-100 (python, its 100 fine labels), as the
    archives unpack."""
    root = _cifar_root(Path(spec).expanduser())
    if root is None:
        raise TunevisionError(f"{Path(spec).expanduser()}: no CIFAR files (batches.meta with data_batch_* and "
                              "test_batch, CIFAR-100's meta with train and test, or the binary data_batch_*.bin)")
    try:
        if (root / "batches.meta.txt").is_file() and not (root / "batches.meta").is_file():
            classes, parts, test = _cifar_binary(root)
        else:
            classes, parts, test = _cifar_pickles(root)
        batches = parts + ([test] if test else [])
        images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([b[1] for b in batches]).astype(np.int64)
        if images.dtype != np.uint8 or len(images) != len(labels) or labels.min() < 0 or labels.max() >= len(classes):
            raise ValueError("uint8 images, one label each, labels in 0..classes-1")
    except (KeyError, ValueError, AttributeError, TypeError) as e:
        raise TunevisionError(f"{root}: not CIFAR batches ({type(e).__name__}: {str(e)[:80]}); re-download the "
                              "archive") from None
    name = "CIFAR-100" if len(classes) == 100 else "CIFAR-10"
    n_train = sum(len(b[1]) for b in parts)
    if test and parts:
        return archive_dataset("cifar10", np.ascontiguousarray(images), labels, classes, range(n_train),
                               range(n_train, len(labels)), f"{name} official train/test split")
    tr, va = stratified_split([(f"{i:08d}", int(l)) for i, l in enumerate(labels)], val_fraction, seed)
    return archive_dataset("cifar10", np.ascontiguousarray(images), labels, classes,
                           [int(s.path) for s in tr], [int(s.path) for s in va], f"{name}, seeded split")


SOURCES.register("cifar100")(cifar10_source)  # `cifar100:DIR` reads the same way


Batch = tuple[np.ndarray, np.ndarray]  # (N x 3072 uint8 pixels, N labels)


def _cifar_pickles(root: Path) -> tuple[list[str], list[Batch], Batch | None]:
    def load(p: Path) -> dict:
        try:
            with open(p, "rb") as f:
                batch = ArraysOnly(f, encoding="bytes").load()
            if not isinstance(batch, dict):
                raise ValueError(f"a {type(batch).__name__}, not a dict")
            return batch
        except (pickle.UnpicklingError, ValueError, EOFError, OSError, TypeError) as e:
            raise TunevisionError(f"{p}: not a CIFAR batch ({str(e)[:100]}); re-download the archive") from None

    def batch(d: dict) -> Batch:  # CIFAR-10 `labels`, CIFAR-100 `fine_labels` (its 100 classes)
        return np.asarray(d[b"data"]), np.asarray(d[b"labels"] if b"labels" in d else d[b"fine_labels"])
    if (root / "batches.meta").is_file():
        classes = [c.decode() for c in load(root / "batches.meta")[b"label_names"]]
        parts = [batch(load(p)) for p in sorted(root.glob("data_batch_*"))]
        test = batch(load(root / "test_batch")) if (root / "test_batch").is_file() else None
    else:
        classes = [c.decode() for c in load(root / "meta")[b"fine_label_names"]]
        parts = [batch(load(root / "train"))]
        test = batch(load(root / "test")) if (root / "test").is_file() else None
    return classes, parts, test


def _cifar_binary(root: Path) -> tuple[list[str], list[Batch], Batch | None]:
    """CIFAR-10's binary version: records of one label byte and 3,072 pixel bytes."""
    def load(p: Path) -> Batch:
        raw = np.fromfile(p, np.uint8)
        if raw.size % 3073:
            raise ValueError(f"{p.name} is not a whole number of 3,073-byte records")
        records = raw.reshape(-1, 3073)
        return records[:, 1:], records[:, 0]
    classes = [line.strip() for line in (root / "batches.meta.txt").read_text().splitlines() if line.strip()]
    parts = [load(p) for p in sorted(root.glob("data_batch_*.bin"))]
    test = load(root / "test_batch.bin") if (root / "test_batch.bin").is_file() else None
    return classes, parts, test


def in_memory_source(data: Any, cache_dir: Path) -> str:
    """(path, label) pairs or a DataFrame -> a CSV; (images, labels) arrays -> an .npz; both under the cache
    folder, named by their content, so that the same data gives the same cache keys and run after run the same
    split."""
    import torch  # only the Python API passes arrays, and it has torch loaded: discovery itself stays without it

    folder = cache_dir / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    forms = ("data is a folder or CSV path, a DataFrame, a list of (path, label) pairs, or (images, labels): an "
             "N x H x W [x 3] uint8 array and N class names")
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        images = np.asarray(data[0].cpu() if isinstance(data[0], torch.Tensor) else data[0])
        try:
            labels = [str(v) for v in data[1]]
        except TypeError:
            raise TunevisionError(f"fit((images, labels)): labels must be a sequence of class names; {forms}") from None
        channels_first = images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels) or not len(images) \
                or images.ndim == 4 and images.shape[-1] not in (1, 3) or min(images.shape[1:3], default=0) < 1:
            hint = " (channels first: pass images.transpose(0, 2, 3, 1))" if channels_first else ""
            raise TunevisionError(f"fit((images, labels)): images must be an N x H x W [x 3] uint8 array and labels "
                                  f"N class names; got {images.dtype} {images.shape} and {len(labels)} labels{hint}")
        key = hashlib.sha1(images.tobytes() + "\n".join(labels).encode()).hexdigest()[:16]
        path = folder / f"{key}.npz"
        if not path.is_file():
            np.savez(path, images=images, labels=np.array(labels))
        return f"npz:{path}"
    if hasattr(data, "to_csv") and hasattr(data, "columns"):  # a pandas DataFrame, as fastai's `from_df` takes
        return _frame_table(data, folder)
    if not isinstance(data, (list, tuple)) or not all(
            isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, Path)) for item in data):
        raise TunevisionError(f"fit({str(data)[:40]}): {forms}")
    pairs = [(str(Path(p).expanduser().resolve()), str(label)) for p, label in data]
    if not pairs:
        raise TunevisionError("fit([]): no (path, label) pairs")
    return _stored_table("path,label\n" + "".join(f'"{p}","{label}"\n' for p, label in pairs), folder)


def _stored_table(text: str, folder: Path) -> str:
    """A table written under `folder`, named by its content (the same data: the same file, caches and split)."""
    path = folder / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.csv"
    path.write_text(text)
    return str(path)


def _frame_table(frame: Any, folder: Path) -> str:
    """A DataFrame as a label table, read by content like any CSV (a path column, labels as a column, a list per
    row or 0/1 columns, a split column); the image paths made absolute from the working directory, which is what
    they were relative to in the notebook."""
    frame = frame.copy()
    for column in frame.columns:
        cells = [str(v) for v in frame[column]]
        if cells and sum(is_image_name(c) or Path(c).expanduser().is_file() for c in cells) * 2 > len(cells):
            frame[column] = [str(Path(c).expanduser().resolve()) if Path(c).expanduser().exists() else c
                             for c in cells]
    return _stored_table(frame.to_csv(index=False), folder)
