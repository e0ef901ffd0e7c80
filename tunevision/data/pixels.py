"""Images stored as rows of pixel values in a table: Kaggle's MNIST (`label,pixel0,...,pixel783`), Fashion-MNIST's
and Sign Language MNIST's CSVs (`fashion-mnist_train.csv` beside `fashion-mnist_test.csv`), `label,1x1,...,28x28`,
HAM10000's `hmnist_28_28_RGB.csv` (`pixel0000,...,pixel2351,label`: 28 x 28 x 3). Told by content: a row of a square
number of pixel values (or three times one, for colour), besides at most one label column. Registers `pixels:`
in SOURCES and as a folder format, so `tunevision train DIR` reads such a folder as `pixels:DIR` would."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunevision.core.errors import TunevisionError
from tunevision.data.archives import FOLDER_SIGNS, archive_dataset
from tunevision.data.layout import entries, held_out_role, split_in_name
from tunevision.data.sources import SOURCES, Dataset, Skipped, stratified_split
from tunevision.data.tables import TABLE_SUFFIXES, names_beside, sniffed_delimiter

PIXEL_NAME = re.compile(r"(pixels?|px|p)?[_ ]?\d+(x\d+)?", re.IGNORECASE)  # pixel0, pixel0000, 1x1, 0
MIN_PIXELS = 64  # 8 x 8 (HAM10000's smallest): fewer numeric columns are measurements, not a picture


@dataclass(frozen=True)
class PixelTable:
    path: Path
    header: bool
    label: int | None  # the label column, None for unlabelled rows (Kaggle's test.csv)
    side: int
    channels: int
    delimiter: str

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.side, self.side) if self.channels == 1 else (self.side, self.side, self.channels)


def _number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _square(pixels: int) -> tuple[int, int] | None:
    """(side, channels) for a row of `pixels` values: side x side grey, or side x side x 3 colour."""
    for channels in (1, 3):
        side = math.isqrt(pixels // channels)
        if pixels >= MIN_PIXELS and side * side * channels == pixels:
            return side, channels
    return None


def pixel_table(path: Path) -> PixelTable | None:
    """The layout of a table of pixel rows, from its first two lines, or None for any other table."""
    if path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None  # a cut multibyte character at the end or another encoding: no table of numbers
    lines = text.splitlines()[:2]
    if len(lines) < 2:
        return None
    delimiter = sniffed_delimiter(text)
    first, second = ([c.strip().strip('"') for c in line.split(delimiter)] for line in lines)
    if len(first) < MIN_PIXELS or len(first) != len(second):
        return None
    header = not all(map(_number, first))
    others = [i for i, c in enumerate(first) if not PIXEL_NAME.fullmatch(c)] if header else []
    if len(others) > 1 or not all(_number(c) for i, c in enumerate(second) if i not in others):
        return None
    shape = _square(len(first) - len(others))
    label = others[0] if others else None
    if not header and shape is None:  # no names: the label is the first column when the rest is a picture
        shape, label = _square(len(first) - 1), 0
    return PixelTable(path, header, label, *shape, delimiter) if shape else None


def _read(table: PixelTable) -> tuple[np.ndarray, list[str] | None]:
    """(N x H x W [x 3] uint8 images, N labels as text or None)."""
    import pandas as pd  # only for tables of pixels: its C parser reads Fashion-MNIST's 60,000 rows in seconds
    try:
        frame = pd.read_csv(table.path, header=0 if table.header else None, sep=table.delimiter,
                            dtype={table.label: str} if table.label is not None else None)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise TunevisionError(f"{table.path}: unreadable table of pixels ({str(e).splitlines()[0]})") from None
    labels = None
    if table.label is not None:
        labels = [str(v).strip() for v in frame.iloc[:, table.label]]
        frame = frame.drop(columns=frame.columns[table.label])
    try:
        values = frame.to_numpy(dtype=np.float32)
    except ValueError:
        raise TunevisionError(f"{table.path}: a pixel cell that is no number; every column but the label holds "
                              "pixel values") from None
    if np.isnan(values).any():
        row = int(np.isnan(values).any(axis=1).argmax())
        raise TunevisionError(f"{table.path}:{row + 1 + table.header}: an empty pixel cell; every row holds "
                              f"{values.shape[1]} pixel values")
    if values.size and values.max() <= 1.0:  # pixels saved as fractions of 255
        values = values * 255
    return np.clip(np.rint(values), 0, 255).astype(np.uint8).reshape(-1, *table.shape), labels


def read_pictures(path: Path) -> np.ndarray | None:
    """The pictures a table of pixel rows holds, labelled or not (Kaggle's test.csv, to predict), or None where
    `path` is no such table."""
    table = pixel_table(path)
    return _read(table)[0] if table else None


def _tables(root: Path) -> list[PixelTable]:
    found = (pixel_table(p) for p in entries(root))
    return [t for t in found if t]


@FOLDER_SIGNS.register("pixels")
def _holds_pixel_tables(root: Path) -> bool:
    return any(t.label is not None for t in _tables(root))


@SOURCES.register("pixels")
def pixels_source(spec: str, val_fraction: float, seed: int) -> Dataset:
    """A table of pixel rows, or a folder of them: a training and a test (or validation) table by their names are
    the split; else the largest picture's table, split by seed. Unlabelled tables are listed, not used."""
    path = Path(spec).expanduser()
    tables = [pixel_table(path)] if path.is_file() else _tables(path)
    if not tables or tables[0] is None:
        raise TunevisionError(f"{path}: no table of pixel rows (a label column and a square number of pixel "
                              "columns, e.g. label,pixel0,...,pixel783)")
    labelled = [t for t in tables if t.label is not None]
    if not labelled:
        raise TunevisionError(f"{path}: its pixel rows have no label column; training needs one (label,pixel0,...)")
    roles = {split_in_name(t.path): t for t in labelled}
    pair = [roles["train"], roles[held_out_role(roles)]] if "train" in roles and held_out_role(roles) else None
    if pair and pair[0].shape != pair[1].shape:
        raise TunevisionError(f"{pair[1].path}: {pair[1].shape} pixels a row where {pair[0].path.name} has "
                              f"{pair[0].shape}; the two tables must hold pictures of one size")
    used = pair or [max(labelled, key=lambda t: (t.side * t.side * t.channels, t.path.name))]
    notes = [Skipped(str(t.path), "no label column: not used" if t.label is None else
                     f"the same pictures at another size or a split it does not name: {used[0].path.name} is used")
             for t in tables if t not in used]
    parts = [_read(t) for t in used]
    images = np.concatenate([p[0] for p in parts])
    texts = [label for _, labels in parts for label in labels]
    classes, labels = _classes(texts, path if path.is_dir() else path.parent)
    where = " and ".join(t.path.name for t in used)
    shape = " x ".join(map(str, used[0].shape))
    if pair:
        n = len(parts[0][0])
        data = archive_dataset("pixels", images, labels, classes, range(n), range(n, len(labels)),
                               f"pixel rows ({shape}) of {where}: official split")
    else:
        tr, va = stratified_split([(f"{i:08d}", int(v)) for i, v in enumerate(labels)], val_fraction, seed)
        data = archive_dataset("pixels", images, labels, classes, [int(s.path) for s in tr],
                               [int(s.path) for s in va], f"pixel rows ({shape}) of {where}, seeded "
                               f"{val_fraction:.0%} validation split")
    data.skipped = notes
    return data


def _classes(texts: list[str], folder: Path) -> tuple[list[str], np.ndarray]:
    """(class names, each row's class index): integer labels in their order, named by a names file beside the data
    where there is one (Fashion-MNIST's classes.txt); other labels by name. Classes no row holds are left out (Sign
    Language MNIST has no J or Z)."""
    if all(t.lstrip("-").isdigit() for t in texts):
        present = sorted({int(t) for t in texts})
        names = names_beside(folder, present[-1] + 1) if present and present[0] >= 0 else []
        classes = [names[v] if names else str(v) for v in present]
        index = {str(v): i for i, v in enumerate(present)}
        return classes, np.array([index[str(int(t))] for t in texts], np.int64)
    classes = sorted(set(texts))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[t] for t in texts], np.int64)
