"""What a user may pass to predict: files, folders, globs, or a list of them, expanded to image files."""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Iterable

from tunevision.data.images import is_image_name
from tunevision.data.layout import under_leftover

NOT_FOUND = "no such file, or no images in that folder/pattern"


def expand_inputs(items: list[str]) -> list[tuple[str, list[str]]]:
    """Each input with the image files it stands for (a file, a folder's images recursively, a glob's matches),
    in input order; an empty list means nothing was found for it."""
    out = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(Path(d) / f) for d, _, fs in os.walk(p) for f in fs
                           if is_image_name(f) and not under_leftover(Path(d) / f, p))
        elif p.is_file():
            found = [str(p)]
        else:
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
        out.append((item, found))
    return out


def as_list(inputs: Any) -> list:
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def is_single(inputs: Any) -> bool:
    return not isinstance(inputs, (list, tuple)) and not (isinstance(inputs, (str, Path)) and (
        Path(inputs).expanduser().is_dir() or any(ch in str(inputs) for ch in "*?[")))


def trained_images(extra: dict) -> set[str] | None:
    """The images that trained a bundle as resolved paths (its `train_files`, named under the folder of the data it
    trained on), or None for a bundle that does not list them."""
    names, data = extra.get("train_files"), extra.get("data", "")
    if not isinstance(names, list) or not data:
        return None
    root = Path(data).expanduser().resolve()
    root = root.parent if root.is_file() else root
    return {n if Path(n).is_absolute() else str(root / n) for n in names}


def not_trained(paths: Iterable[str | Path], trained: set[str]) -> list[bool]:
    """Per path, whether it is no image of `trained_images`: whatever the data is called now (the folder it trained
    on, its CSV or JSON, a subfolder), an image that trained the model is never scored as held out."""
    return [str(Path(p).expanduser().resolve()) not in trained for p in paths]


def relative_names(paths: Iterable[str | Path], data: str | Path) -> list[str]:
    """Image paths relative to the data's folder (a CSV's own folder): how a bundle records which images trained
    it, so that `evaluate` on that folder later scores only the others, whatever was added or deleted since."""
    root = Path(data).expanduser().resolve()
    root = root.parent if root.is_file() else root
    names = []
    for p in paths:
        full = Path(p).expanduser().resolve()
        names.append(full.relative_to(root).as_posix() if full.is_relative_to(root) else str(full))
    return names
