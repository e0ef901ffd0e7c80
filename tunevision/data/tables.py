"""Label tables (CSV) read by content, not by column names: the delimiter, the header, the path column, a split
column, and the labels as one column (one label per row, or a list separated by `|`, `;`, `,` inside quotes, or
spaces as in Kaggle's planet `tags`) or as one-hot 0/1 columns. Paths resolve against `--images DIR`, the CSV's
folder, or an image folder beside it, whichever holds them. A table with any row of several labels, or one-hot
columns, is multi-label; a row with no label is then a valid "none of these" image."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunevision.core.errors import TunevisionError
from tunevision.data.images import is_image_name
from tunevision.data.layout import (
    entries,
    has_subfolders,
    split_dirs,
    split_role,
    training_and_held_out,
    under_leftover,
)

# -1: PASCAL VOC's classification lists mark an absent label so (1 present, 0 "difficult", counted absent here)
ONE_HOT = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "-1": 0, "-1.0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
LIST_SEPARATORS = ("|", ";", ",")


@dataclass
class LabelTable:
    paths: list[str]
    labels: list[list[str]]          # each row's labels (one for a single-label table, any number otherwise)
    splits: list[str]                # "train" / "val" per row, or "" when the table names no split
    names: list[str]                 # every label, sorted (one-hot: in column order)
    multilabel: bool
    layout: str
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path or file:line, reason) left out


TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
LABEL_FILE_SUFFIXES = (*TABLE_SUFFIXES, ".json")  # a label table, or the same facts in JSON (`json_rows`)


def is_table(spec: str) -> bool:
    """Whether a data spec names a label table: a .csv, .tsv, .txt or .json file (a folder is never one)."""
    return spec.lower().endswith(LABEL_FILE_SUFFIXES) and not Path(spec).expanduser().is_dir()


def decoded(path: Path) -> str:
    """A table's text whatever Excel saved it as: UTF-8 (its byte-order mark dropped, so that it does not become
    part of the header), UTF-16 ("Unicode text", with its mark), else Windows' own code page (cp1252, an accented
    class name from a European Excel); a byte cp1252 has no character for stays readable as latin-1. A workbook
    (.xlsx, a zip) is one line saying so."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TunevisionError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.startswith(b"PK\x03\x04"):
        raise TunevisionError(f"{path}: an Excel workbook, not a CSV; save it as CSV UTF-8 (File > Save As)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def sniffed_delimiter(text: str) -> str:
    """, ; or tab, by the table's content (a European Excel separates with ;)."""
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def read_rows(path: Path) -> list[list[str]]:
    if path.suffix.lower() == ".json":
        return json_rows(path)
    text = decoded(path)
    delimiter = sniffed_delimiter(text)
    try:  # only the delimiter is sniffed: the sniffer takes the ' of a quoted "['a', 'b']" for the quote character
        rows = [[c.strip() for c in r] for r in csv.reader(text.splitlines(), delimiter=delimiter)
                if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    except csv.Error as e:
        raise TunevisionError(f"{path}: not a readable CSV ({e})") from None
    if rows and max(map(len, rows)) == 1 and any(len(r[0].split()) > 1 for r in rows):
        # a list file (`images/a.jpg 3`, as Caffe and many .txt splits write them): columns split by spaces
        rows = [r[0].split() for r in rows]
    if len(rows) > 2 and len(rows[0]) == 1 and rows[0][0].isdigit() and len(rows[2]) > 1:
        # CelebA's and DeepFashion's lists: a count line, then a header that may leave the image column unnamed
        rows = rows[1:]
        if len(rows[0]) == len(rows[1]) - 1:
            rows[0] = ["image", *rows[0]]
    return rows


def json_rows(path: Path) -> list[list[str]]:
    """Labels kept in JSON, as a table's rows (a header, then one row per image), so that every rule of a CSV
    applies: records (`[{"file_name": "a.jpg", "label": "cat"}, ...]`), a map of images to labels (`{"a.jpg": "cat"}`
    or to lists of labels), or COCO's classification form (images, annotations and categories without boxes:
    iNaturalist's, iWildCam's). A list of labels becomes a `|`-separated cell. Boxes, outlines or other nested
    values are annotations, not labels: an error, so that a folder's other JSON files are not taken for its table."""
    try:
        doc = json.loads(decoded(path))
    except ValueError as e:
        raise TunevisionError(f"{path}: not readable JSON ({e})") from None
    if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
        return _coco_rows(path, doc)
    records = [{"image": k, "label": v} for k, v in doc.items()] if isinstance(doc, dict) else doc
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise TunevisionError(f"{path}: JSON that is neither records of images and labels nor a map of images to "
                              "labels")
    header = list(dict.fromkeys(k for r in records for k in r))
    return [header, *([_cell(path, r.get(k)) for k in header] for r in records)]


def _cell(path: Path, value) -> str:
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return "|".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        raise TunevisionError(f"{path}: nested values (boxes, shapes) are annotations, not a label table")
    return "" if value is None else str(value)


def coco_has_objects(annotations: list) -> bool:
    """Whether COCO annotations place objects (a bbox or a segmentation): detection data, else labels alone."""
    return isinstance(annotations, list) and any(isinstance(a, dict) and ("bbox" in a or "segmentation" in a)
                                                 for a in annotations)


def _coco_rows(path: Path, doc: dict) -> list[list[str]]:
    """COCO's images with the names of their annotations' categories; boxes or masks make it detection data."""
    try:
        names = {c["id"]: str(c["name"]) for c in doc["categories"]}
        if coco_has_objects(doc["annotations"]):
            raise TunevisionError(f"{path}: COCO boxes or masks are detection data (--task detect), not labels")
        labels: dict = {}
        for a in doc["annotations"]:
            labels.setdefault(a["image_id"], []).append(names[a["category_id"]])
        return [["file_name", "label"], *([im["file_name"], "|".join(dict.fromkeys(labels[im["id"]]))]
                                          for im in doc["images"] if im["id"] in labels)]
    except (KeyError, TypeError) as e:
        raise TunevisionError(f"{path}: COCO JSON without {e} where images, annotations and categories meet") from None


# what a column of image names without an extension is called (HAM10000's image_id after its lesion_id), by rank
PATH_WORDS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image_path", "image_name", "image",
              "image_id", "img", "id", "name")


def path_column(rows: list[list[str]]) -> int:
    """The column whose values are image file names (most of them), else the one the header names so, else the
    first."""
    width = min(len(r) for r in rows)
    scores = [sum(is_image_name(r[i]) for r in rows[:200]) for i in range(width)]
    best = max(range(width), key=lambda i: scores[i])
    if scores[best]:
        return best
    words = [c.strip().lower() for c in rows[0][:width]]
    return next((words.index(w) for w in PATH_WORDS if w in words), 0)


HEADER_WORDS = {"path", "file", "filename", "filenames", "image", "images", "img", "id", "name", "label", "labels",
                "tag", "tags", "class", "classes", "category", "categories", "split"}


def _header_words(cell: str) -> list[str]:
    """A column name's words: `image_name` -> image, name; Open Images' `ImageID` -> image, id."""
    return re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", cell).lower())


def _rows_per_image(paths: list[str], labels: list[list[str]], splits: list[str], multilabel: bool
                    ) -> tuple[list[str], list[list[str]], list[str], list[tuple[str, str]], str]:
    """(paths, labels, splits, problems, how rows were joined: "" where each image had one): one row per image.
    - A table of a row per label (Open Images' `ImageID,LabelName`) gives each image all its rows' labels:
      multi-label data where one image in a hundred or more gains a label so, or where asked for.
    - Rows that are votes (several annotators' labels of each image, most images given one label more than once)
      give each image its most common label, the first of a tie.
    - Else an image labelled twice keeps its first label, the rest listed; an image listed twice alike is one."""
    first: dict[str, int] = {}  # each image's first row
    votes: dict[str, Counter] = {}
    for i, (p, ls) in enumerate(zip(paths, labels)):
        if p not in votes:
            first[p], votes[p] = i, Counter()
        votes[p].update(ls)
    if len(votes) == len(paths):
        return paths, labels, splits, [], ""
    kept = list(votes)
    kept_splits = [splits[first[p]] for p in kept]
    several = [p for p in kept if sum(votes[p].values()) > len(labels[first[p]])]
    one_each = all(len(ls) <= 1 for ls in labels)  # votes are single labels; a duplicated list row is no vote
    if not multilabel and one_each and sum(max(votes[p].values()) > 1 for p in several) * 2 > len(several):
        return kept, [[votes[p].most_common(1)[0][0]] if votes[p] else [] for p in kept], kept_splits, [], "votes"
    merged = {p: list(votes[p]) for p in kept}  # a Counter keeps its labels in the order first seen
    gained = [p for p in kept if len(merged[p]) > len(labels[first[p]])]
    if multilabel or len(gained) * 100 >= len(kept):
        return kept, [merged[p] for p in kept], kept_splits, [], "joined"
    conflicts = [(p, f"labelled {' and '.join(merged[p])} by the table's rows: {labels[first[p]][0]} kept")
                 for p in gained if labels[first[p]]]
    return kept, [labels[first[p]] for p in kept], kept_splits, conflicts, ""


def _has_header(rows: list[list[str]], path_col: int) -> bool:
    """By content: the path column's first cell is no image name while the next is, or the first row has a column
    named in column words alone (image_name, tags, ImageID, LabelName; Kaggle's planet and Open Images name their
    images without an extension)."""
    if len(rows) < 2:
        return False
    if not is_image_name(rows[0][path_col]) and is_image_name(rows[1][path_col]):
        return True
    # no digits: a headerless table's first name `image_0001` is made of header words too
    return any((words := _header_words(c)) and set(words) <= HEADER_WORDS and not any(ch.isdigit() for ch in c)
               for c in rows[0])


def _resolve(root: Path, name: str) -> Path:
    """`name` under `root`; a name without an extension (planet's `train_0`) finds its image file."""
    path = Path(name) if Path(name).is_absolute() else root / name
    if path.suffix or path.is_file():
        return path
    return next((path.with_suffix(ext) for ext in (".jpg", ".png", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
                 if path.with_suffix(ext).is_file()), path)


NAMES_FILES = ("classes.txt", "class_names.txt", "classnames.txt", "names.txt", "obj.names")


def names_beside(folder: Path, count: int, table: Path | None = None) -> list[str]:
    """Class names for indices 0..count-1 from a names file in `folder` (one per line; not `table` itself), or
    [] where there is none that names as many, each once."""
    for candidate in NAMES_FILES:
        f = folder / candidate
        if f.is_file() and f != table:
            lines = [line.strip() for line in f.read_text(errors="replace").splitlines() if line.strip()]
            if len(lines) >= count and len(set(lines)) == len(lines):
                return lines
    return []


def names_map(folder: Path, keys: list[str]) -> tuple[dict[str, str], str]:
    """({key: name}, where from) naming every key, from a file in `folder` or the one above it: a JSON object
    (Udacity's `cat_to_name.json` beside flower folders numbered 1..102) or a text or CSV file of `key name` lines
    (Tiny ImageNet's `words.txt`, ImageNet's `LOC_synset_mapping.txt`, Open Images' `class-descriptions.csv`); for
    WordNet-id folders without one (Imagenette's `n01440764/`), timm's list of ImageNet synsets; else ({}, "")."""
    for place in (folder, folder.parent):
        for f in sorted(place.glob("*.json")) + sorted(place.glob("*.txt")) + sorted(place.glob("*.csv")) \
                if place.is_dir() else ():
            found = _read_names(f, keys)
            if found:
                return found, f.name
    synsets = _timm_synsets()
    found = _read_names(synsets, keys) if synsets and all(WORDNET_ID.fullmatch(k) for k in keys) else None
    return (found, "timm's ImageNet synsets") if found else ({}, "")


WORDNET_ID = re.compile(r"n\d{8}")
# `key name`, `key<TAB>name`, `key,name`, `key: name`: the key is the line's first word
NAME_LINE = re.compile(r"\s*([^\s,:;=]+)\s*[\t,:;=]?\s*(.*\S)")


def _read_names(f: Path, keys: list[str]) -> dict[str, str] | None:
    """{key: name} from one JSON or text map that names every key with a name that is not a number; WordNet's
    names cut to their first synonym (`goldfish, Carassius auratus` -> `goldfish`), a name given twice followed by
    its key (ImageNet's two cranes)."""
    try:
        if not keys or f.stat().st_size > (1 << 22 if f.suffix == ".txt" else 1 << 20):  # words.txt: 2.6 MB
            return None
        text = f.read_text(errors="replace")
        if f.suffix == ".json":
            found = json.loads(text)
        else:
            wanted = set(keys)
            lines = [line for line in text.replace('"', "").splitlines() if line.strip()]
            found = {m[1]: m[2] for line in lines if (m := NAME_LINE.match(line)) and m[1] in wanted}
            # keys that are words (`daisy`) name classes only in a file that is all map: a README's `daisy - 633
            # images` is no name; ids (`n01443537`, `/m/0cnyhnx`, `17`) may pick a few lines of a long list
            if not all(any(c.isdigit() for c in k) for k in keys) and len(found) < 0.8 * len(lines):
                return None
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not all(isinstance(found.get(k), str) and found[k].strip() for k in keys):
        return None
    wordnet = all(WORDNET_ID.fullmatch(k) for k in keys)
    names = [found[k].split(",")[0].strip() if wordnet else found[k].strip() for k in keys]
    if all(n.lstrip("-").isdigit() for n in names) or names == keys:  # `daisy 0`: indices, not names
        return None
    counts = Counter(names)
    if not wordnet and len(counts) < len(names):
        return None
    return {k: n if counts[n] == 1 else f"{n} ({k})" for k, n in zip(keys, names)}


def _timm_synsets() -> Path | None:
    """timm's WordNet-id -> name list, found without importing timm (its import takes seconds)."""
    spec = importlib.util.find_spec("timm")
    folders = spec.submodule_search_locations if spec else None
    path = Path(folders[0]) / "data" / "_info" / "imagenet_synset_to_lemma.txt" if folders else None
    return path if path and path.is_file() else None


def _class_names_file(folder: Path, names: list[str], table: Path) -> list[str]:
    """The class names of a table whose labels are indices 0..N-1, from a names file beside it, or [] (labels
    that are not all indices, no such file, or fewer names in it than indices)."""
    if not names or not all(n.isdigit() for n in names):
        return []
    return names_beside(folder, max(int(n) for n in names) + 1, table)


def _found_by_name(paths: list[Path], folders: list[Path]) -> list[str]:
    """Each path, or where it is not, the one image of that file name (or stem, for a name without an extension)
    under `folders`: images spread over several folders (HAM10000's `part_1/` and `part_2/`), absolute paths from
    another machine. A name two images share stays unresolved (and is reported missing) rather than guessed."""
    if all(p.is_file() for p in paths):
        return [str(p) for p in paths]
    index: dict[str, Path | None] = {}
    for folder in folders:
        for f in (folder.rglob("*") if folder.is_dir() else ()):
            if is_image_name(f.name) and not under_leftover(f, folder):
                for key in (f.name, f.stem):
                    index[key] = None if index.get(key, f) != f else f
    return [str(p if p.is_file() else index.get(p.name) or p) for p in paths]


def image_paths(table: Path, names: list[str], images: str = "") -> tuple[list[str], Path]:
    """(the files a table's path cells name, the folder they are relative to): `--images`, the table's folder or an
    image folder beside it; a name that is not there found by its file name (`_found_by_name`)."""
    names = [n.replace("\\", "/") if "\\" in n and not Path(n).exists() else n for n in names]  # written on Windows
    root = _image_root(table, names, images)
    return _found_by_name([_resolve(root, n) for n in names],
                          [table.parent] + ([] if root.is_relative_to(table.parent) else [root])), root


def _image_root(csv_path: Path, paths: list[str], images: str) -> Path:
    """The folder the table's relative paths are relative to: --images, the CSV's folder, or an image folder beside
    it (the first where most of the first 50 paths exist)."""
    base = csv_path.parent
    candidates = ([Path(images).expanduser()] if images else []) + [base] + sorted(
        p for p in base.iterdir() if p.is_dir())
    sample = [p for p in paths[:50] if not Path(p).is_absolute()]
    for root in candidates:
        if not sample or sum(_resolve(root, p).is_file() for p in sample) * 2 >= len(sample):
            return root
    if images:
        raise TunevisionError(f"{csv_path}: its paths (e.g. {sample[0]}) are not under --images {images}")
    return base


def _split_column(header: list[str], rows: list[list[str]], skip: set[int]) -> int | None:
    for i, name in enumerate(header):
        if i in skip:
            continue
        values = {r[i].lower() for r in rows if i < len(r)}
        if name.lower() in ("split", "fold", "set", "subset") or values and all(map(split_role, values)):
            return i
    return None


CONFIDENCE_WORDS = {"confidence", "present", "positive", "verified"}


def _confidence_column(header: list[str], rows: list[list[str]], skip: set[int]) -> int | None:
    """A column named for a label's confidence whose cells are numbers from 0 to 1, or None."""
    for i, name in enumerate(header):
        if i not in skip and set(_header_words(name)) & CONFIDENCE_WORDS:
            try:
                if all(0 <= float(r[i]) <= 1 for r in rows if i < len(r)):
                    return i
            except ValueError:
                continue
    return None


def _one_hot_columns(header: list[str], rows: list[list[str]], skip: set[int]) -> list[int]:
    """Columns of numbers that are mostly 0/1: one-hot labels when there are two or more (a stray 2 in one of them is
    then reported with its line, not taken for a class name)."""
    def number(v: str) -> bool:
        try:
            float(v)
            return True
        except ValueError:
            return v in ONE_HOT
    cols = []
    for i in range(len(header)):
        if i in skip:
            continue
        values = [r[i].lower() for r in rows if i < len(r)]
        if values and all(map(number, values)) and sum(v in ONE_HOT for v in values) >= 0.6 * len(values):
            cols.append(i)
    return cols if len(cols) >= 2 else []


LABEL_WORDS = {"label", "labels", "class", "classes", "class_name", "classname", "label_name", "category",
               "categories", "tag", "tags", "target", "y", "breed", "species", "diagnosis", "dx"}


def names_labels(column: str) -> bool:
    """A column name of label words and `name` or `id` (Open Images' `LabelName`, `ClassName`, `category_id`)."""
    words = set(_header_words(column))
    return bool(words & LABEL_WORDS) and words <= LABEL_WORDS | {"name", "names", "id"}


def _label_column(header: list[str], rows: list[list[str]], skip: set[int], named: bool) -> tuple[int | None, bool]:
    """(the column of labels, whether its header names it so): the one a header word names (clothing's
    `image,sender_id,label,kids`), else the first whose values repeat as classes do (at most one distinct value in
    two rows; HAM10000's `dx` after its `lesion_id`), else the first besides the path (and split) columns."""
    rest = [i for i in range(len(header)) if i not in skip]
    by_name = [i for i in rest if named and (header[i].strip().lower() in LABEL_WORDS or names_labels(header[i]))]
    if by_name:
        return by_name[0], True
    repeats = [i for i in rest if 2 <= len({r[i] for r in rows if i < len(r)}) <= len(rows) / 2]
    return (repeats or rest or [None])[0], False


def _chosen_column(path: Path, header: list[str], wanted: str) -> int:
    """The column --label-column names: by its header (any case), or its number from 1."""
    names = [h.strip().lower() for h in header]
    if wanted.strip().lower() in names:
        return names.index(wanted.strip().lower())
    if wanted.strip().isdigit() and 1 <= int(wanted) <= len(header):
        return int(wanted) - 1
    raise TunevisionError(f"{path}: no column {wanted!r} for --label-column; its columns are "
                          f"{', '.join(h.strip() for h in header)} (or a number from 1 to {len(header)})")


def _separator(header_name: str, cells: list[str], multilabel: bool) -> str | None:
    """How a label-list column separates its labels, or None for one label per row."""
    for sep in LIST_SEPARATORS:
        if any(sep in c for c in cells):
            return sep
    plural = header_name.lower() in ("tags", "labels", "classes", "categories")
    if (plural or multilabel) and any(len(c.split()) > 1 for c in cells):
        return " "
    return None


def read_label_table(path: str | Path, images: str = "", multilabel: bool = False, label_column: str = ""
                     ) -> LabelTable:
    """A CSV of images and labels, read by content (see the module docstring). `multilabel`: the caller's
    --task multilabel, which also reads space-separated label lists. `label_column`: the user's --label-column (a
    name or a 1-based number), where a table holds several columns that could be labels."""
    path = Path(path).expanduser()
    rows = read_rows(path)
    if not rows:
        raise TunevisionError(f"{path}: empty CSV; expected a path column and labels")
    path_col = path_column(rows)
    header = rows[0] if _has_header(rows, path_col) else [f"column {i + 1}" for i in range(len(rows[0]))]
    first_line = 2 if header is rows[0] else 1
    body = rows[first_line - 1:]
    if len(header) < 2:
        raise TunevisionError(f"{path}: one column only; expected a path column and a label column (or 0/1 "
                              "columns, one per label)")
    split_col = _split_column(header, body, {path_col})
    skip = {path_col} | ({split_col} if split_col is not None else set())
    label_col, by_name = (_chosen_column(path, header, label_column), True) if label_column else \
        _label_column(header, body, skip, named=header is rows[0])
    # a column chosen or named for the labels leaves 0/1 columns beside it as other facts (clothing's kids), unless
    # it is itself one of them
    hot = [] if label_column or by_name and not all(r[label_col].lower() in ONE_HOT for r in body
                                                    if label_col < len(r)) else _one_hot_columns(header, body, skip)
    # Open Images' human-verified labels: a row per label with a Confidence of 1 (there) or 0 (verified absent)
    confidence = None if hot else _confidence_column(header, body, skip | {label_col})
    paths, labels, splits, problems = [], [], [], []
    sep = None if hot else _separator(header[label_col], [r[label_col] for r in body if label_col < len(r)],
                                      multilabel)
    for n, r in enumerate(body, start=first_line):
        if len(r) < len(header):
            raise TunevisionError(f"{path}:{n}: expected {len(header)} columns, got {len(r)}")
        if hot:
            bad = next((header[i] for i in hot if r[i].lower() not in ONE_HOT), None)
            if bad is not None:
                raise TunevisionError(f"{path}:{n}: column {bad!r} holds {r[header.index(bad)]!r}; one-hot cells are "
                                      "0 or 1")
            row_labels = [header[i] for i in hot if ONE_HOT[r[i].lower()]]
        else:
            cell = r[label_col]
            if cell.startswith("[") and cell.endswith("]"):  # a list as pandas writes one: "['sea', 'sunset']"
                cell = cell[1:-1]
            row_labels = [t.strip().strip("'\"").strip() for t in (cell.split(sep) if sep else [cell])]
            row_labels = [t for t in row_labels if t and (confidence is None or float(r[confidence]) >= 0.5)]
        paths.append(r[path_col])
        labels.append(sorted(set(row_labels), key=row_labels.index))
        role = split_role(r[split_col]) if split_col is not None else ""
        splits.append("val" if role == "test" else role)  # a table's test rows are its held-out rows
    paths, labels, splits, conflicts, joined = _rows_per_image(paths, labels, splits, multilabel)
    multi = bool(hot) or multilabel or any(len(ls) > 1 for ls in labels)
    problems += conflicts
    if not multi:  # one label per row: an empty cell is a mistake, not "none of these"
        keep = [i for i, ls in enumerate(labels) if ls]
        problems += [(paths[i], "no label in the CSV row") for i in range(len(labels)) if not labels[i]]
        paths, labels, splits = [paths[i] for i in keep], [labels[i] for i in keep], [splits[i] for i in keep]
    paths, root = image_paths(path, paths, images)
    names = [header[i] for i in hot] if hot else sorted({lab for ls in labels for lab in ls})
    named = _class_names_file(path.parent, names, table=path)
    if named:  # class indices with their names beside the table: train on the names
        labels = [[named[int(lab)] for lab in ls] for ls in labels]
        names = sorted({named[int(n)] for n in names})
    kind = ("one-hot columns" if hot else f"label lists separated by {sep!r}" if sep else
            "a row per label, an image's rows joined" if joined == "joined" else
            "several votes per image, the most common kept" if joined == "votes" else "one label per row")
    where = "" if root == path.parent else f", images in {root}"
    form = "JSON" if path.suffix.lower() == ".json" else "CSV"
    return LabelTable(paths, labels, splits, names, multi, f"{form} ({kind}{where})", problems)


STORE_WORDS = ("image", "img", "photo", "picture", "jpg", "jpeg", "png")  # in the name of a folder of images


def _holds_no_class_folders(folder: Path) -> bool:
    """Whether a folder's subfolders are all flat image stores rather than classes: a single one, or each named as
    a split or as images (`train/`, `test/`, `images/`, `train_images/`), with no folders (of classes) in them."""
    subs = [p for p in entries(folder) if p.is_dir()]
    stores = len(subs) <= 1 or all(split_role(p.name) or any(w in p.name.lower() for w in STORE_WORDS) for p in subs)
    return stores and not any(has_subfolders(p) for p in subs)


def split_tables(folder: Path, label_column: str = "") -> tuple[Path, Path] | None:
    """(training table, validation table) where split folders each come with their own (Roboflow's train/ and
    valid/, each with its `_classes.csv` beside its loose images), else None."""
    folders = training_and_held_out(split_dirs(folder))
    if folders is None:
        return None
    train, val = table_in(folders[0], label_column=label_column), table_in(folders[1], 1, label_column)
    return (train, val) if train and val else None


def table_in(folder: Path, min_classes: int = 2, label_column: str = "") -> Path | None:
    """The label table a folder of images comes with, when its folders are not classes: Kaggle's train.csv beside
    train/ and test/ of loose images, miml-scenes' labels.csv beside images/. The first table (by name) whose paths
    name images that are there and whose labels give two or more classes; sample_submission.csv's do not."""
    if not folder.is_dir() or not _holds_no_class_folders(folder):
        return None
    for path in (p for p in entries(folder) if p.is_file() and p.suffix.lower() in LABEL_FILE_SUFFIXES):
        try:
            table = read_label_table(path, label_column=label_column)
        except TunevisionError:
            continue
        found = sum(Path(p).is_file() for p in table.paths[:200])
        if len(table.names) >= min_classes and found * 2 > min(len(table.paths), 200):
            return path
    return None
