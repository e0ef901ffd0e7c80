"""`--fixes audit.csv`: the user's decisions on an audit (keep, drop, relabel:NAME; relabel:A;B for multi-label
data; keep or drop for boxes and masks), applied to the discovered samples before decoding, so that the split stays
the seeded one and every later stage sees the fixed labels."""
from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

from tunevision.core.errors import TunevisionError
from tunevision.data.sources import Dataset, Sample
from tunevision.data.tables import decoded, sniffed_delimiter


def _key(path: str) -> str:
    return path if "#" in Path(path).name else str(Path(path).expanduser().resolve())


def read_fixes(path: str | Path) -> list[tuple[int, str, str]]:
    """(line number, image path, action) for every row whose action is not keep. A missing column or a bad
    action is one line naming its line."""
    path = Path(path).expanduser()
    try:
        text = decoded(path)  # as Excel saved it, like any label table
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f, delimiter=sniffed_delimiter(text))
            if not reader.fieldnames or not {"path", "action"} <= {c.strip() for c in reader.fieldnames}:
                raise TunevisionError(f"{path}: a fixes file needs the columns path and action (as audit.csv has "
                                      f"them), found {', '.join(reader.fieldnames or []) or 'none'}")
            rows = []
            for row in reader:
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                action = row["action"] or "keep"
                if action not in ("keep", "drop") and not action.startswith("relabel:"):
                    raise TunevisionError(f"{path}, line {reader.line_num}: action {action!r}; use keep, drop or "
                                          "relabel:NAME")
                if action != "keep":
                    rows.append((reader.line_num, row["path"], action))
            return rows
    except csv.Error as e:
        raise TunevisionError(f"{path}: not a readable CSV ({e}); save it as CSV UTF-8") from None


def _new_labels(action: str, multilabel: bool) -> list[str]:
    """The class names a relabel action gives: one, or for multi-label data any number joined by `;` (none: the
    image shows none of the labels)."""
    label = action.partition(":")[2].strip()
    if not multilabel:
        return [label] if label else []
    return [n.strip() for n in label.split(";") if n.strip()]


def _decided(fixes: str | Path, data: str, known: set[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, image key, action) for every row that is not keep, in file order, each path found among the
    `known` image keys as given or relative to the data's folder; one that names no image of the data is one
    line."""
    root = Path(data).expanduser()
    root = root.parent if root.is_file() else root
    for line, name, action in read_fixes(fixes):
        key = next((k for k in (_key(name), _key(str(root / name))) if k in known), None)
        if key is None:
            raise TunevisionError(f"{fixes}, line {line}: {name} is not an image of {data}; fix the path or "
                                  "delete the row")
        yield line, key, action


def apply_fixes(ds: Dataset, fixes: str | Path, data: str) -> dict:
    """Drop and relabel `ds`'s samples in place per the fixes file; returns what was done, for the run folder.
    A path that names no image of the data, or a class it does not have, is one line with its line number."""
    decided: dict[str, str] = {}
    for line, key, action in _decided(fixes, data, {_key(s.path) for s in ds.train + ds.val}):
        unknown = [name for name in _new_labels(action, ds.multilabel) if name not in ds.classes]
        if action.startswith("relabel:") and (unknown or not ds.multilabel and not _new_labels(action, False)):
            label = unknown[0] if unknown else ""
            raise TunevisionError(f"{fixes}, line {line}: relabel to {label!r}, which is not a class of {data} "
                                  f"({', '.join(ds.classes)})")
        decided[key] = action
    index = {c: i for i, c in enumerate(ds.classes)}

    def fixed(items: list[Sample]) -> list[Sample]:
        out = []
        for s in items:
            action = decided.get(_key(s.path), "keep")
            if action.startswith("relabel:"):
                new = tuple(sorted(index[n] for n in _new_labels(action, ds.multilabel)))
                s = (dataclasses.replace(s, label=new[0] if new else -1, labels=new) if ds.multilabel else
                     dataclasses.replace(s, label=new[0]))
            if action != "drop":
                out.append(s)
        return out
    ds.train, ds.val = fixed(ds.train), fixed(ds.val)
    actions = list(decided.values())
    return {"file": str(Path(fixes).expanduser().resolve()), "dropped": actions.count("drop"),
            "relabelled": sum(a.startswith("relabel:") for a in actions)}


def drop_fixed_items(train: list, val: list, fixes: str | Path, data: str) -> tuple[list, list, dict]:
    """The annotated images (anything with an `image` path: boxes, masks) of a split, less those the fixes file
    drops; a path that is no image of the data, or a relabel (a box's class is no image's), is one line with its
    line number."""
    dropped: set[str] = set()
    for line, key, action in _decided(fixes, data, {_key(str(it.image)) for it in train + val}):
        if action != "drop":
            raise TunevisionError(f"{fixes}, line {line}: {action!r}; images with boxes or masks take keep or drop "
                                  "(their classes are their objects')")
        dropped.add(key)

    def kept(items: list) -> list:
        return [it for it in items if _key(str(it.image)) not in dropped]
    return kept(train), kept(val), {"file": str(Path(fixes).expanduser().resolve()), "dropped": len(dropped),
                                    "relabelled": 0}
