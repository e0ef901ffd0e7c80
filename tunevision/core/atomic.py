"""Files written atomically (temp file, then rename): a run killed at any moment leaves the previous version or
the new one, never half of one."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

from tunevision.core.errors import TunevisionError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Temp files of `path` left by a process that was killed mid-write (kill -9, power loss): they would keep the
    disk full for good. A live writer's temp file stays."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename onto `path`; a failure (a full disk, say) leaves the old file and no temp file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    remove_stale_temps(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError from its zip writer, safetensors as a SafetensorError
        if isinstance(e, OSError) or type(e).__name__ in ("RuntimeError", "SafetensorError"):
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
            raise TunevisionError(f"{path}: cannot write ({reason}); the previous version is intact; free disk "
                                  "space and retry") from None
        raise


def write_csv(path: Path, header: list[str], rows) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    atomic_write(path, write)
