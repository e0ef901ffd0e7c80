"""Files written atomically (temp file, then rename): a run killed at any moment leaves the previous version or
the new one, never half of one."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

from tunevision.core.errors import TunevisionError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename onto `path`; a failure (a full disk, say) leaves the old file and no temp file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TunevisionError(f"{path}: cannot write ({e.strerror or e}); the previous version is intact") from None


def write_csv(path: Path, header: list[str], rows) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    atomic_write(path, write)
