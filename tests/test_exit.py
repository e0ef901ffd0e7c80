"""Process-level settings of the command: it ends without the interpreter's teardown (`cli.main.entry`), and its
exit code, its output and every file it wrote, the image cache written behind the run included, are there all the
same; malloc keeps freed blocks on glibc."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import make_class_folders, tiny_args


def tunevision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunevision", *args], capture_output=True, text=True, timeout=300)


def test_a_run_exits_zero_with_its_log_and_files_whole(tmp_path: Path) -> None:
    data, cache, runs = make_class_folders(tmp_path / "d", n=12), tmp_path / "cache", tmp_path / "runs"
    r = tunevision("train", str(data), *tiny_args(str(cache), runs, "--mode", "freeze", "--epochs", "2", "--views",
                                                   "0", "--no-audit", "--name", "t"))
    assert r.returncode == 0, r.stderr
    assert "done val accuracy" in r.stderr and "time by stage" in r.stderr  # flushed before the quick exit
    assert json.loads((runs / "t" / "summary.json").read_text())["epochs_run"] == 2
    # the image cache was written in a thread behind the run: whole once the process is gone
    images = cache / "images"
    npys = sorted(images.glob("*.npy"))
    assert npys and not [p for p in images.iterdir() if ".tmp" in p.name]
    for npy in npys:
        meta = json.loads(npy.with_suffix(".json").read_text())
        assert npy.stat().st_size == meta["bytes"] and np.load(npy, mmap_mode="r").dtype == np.uint8


def test_errors_and_other_commands_keep_their_exit_codes(tmp_path: Path) -> None:
    r = tunevision("train", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = tunevision("--version")
    assert r.returncode == 0 and "tunevision, version" in r.stdout
    r = tunevision("no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr


def test_malloc_keeps_freed_blocks_where_the_c_library_is_glibc() -> None:
    from tunevision.core.allocator import keep_freed_memory
    assert keep_freed_memory() == (platform.libc_ver()[0] == "glibc")


def test_commands_that_never_draw_start_without_matplotlib() -> None:
    """predict, serve, export and the CLI itself load matplotlib at their first figure only (0.1 s of start-up)."""
    code = ("import sys, tunevision.cli.main, tunevision.tasks, tunevision.serve.app, tunevision.models.hub; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
