"""Output and cache locations, checked before any work starts: a mistake costs a line, not a finished run."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tunevision.core.errors import TunevisionError


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """The folder if it exists and is writable, or if it can be created (its nearest existing parent is a
    writable folder); nothing is created here. Otherwise a TunevisionError that names it."""
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = ""
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".tunevision-write-check-"):
                pass
        except OSError as e:
            problem = f"{existing} is not writable ({e.strerror or e})"
    if problem:
        raise TunevisionError(f"{folder}: cannot write the {what} here: {problem}; choose another folder or fix "
                              "its permissions")
    return folder


def writable_file(path: str | Path, what: str = "output file") -> Path:
    """A file path whose folder exists (or is created) and is writable, and which is not itself a folder."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise TunevisionError(f"{target}: is a folder; give a file name for the {what}")
    if target.exists() and not os.access(target, os.W_OK):
        raise TunevisionError(f"{target}: the {what} exists and is not writable")
    writable_dir(target.parent, f"folder of the {what}").mkdir(parents=True, exist_ok=True)
    return target


def check_run_outputs(out: str | Path | None, cache_dir: str | Path | None) -> None:
    """A run's parent folder and its cache, writable or creatable, before any work starts (CLI, YAML and API)."""
    if out is not None:
        writable_dir(out, "run folder (--out)")
    if cache_dir:
        writable_dir(cache_dir, "cache (--cache-dir)")
