"""Kill a training process mid-run, resume it, and get every epoch exactly once."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_class_folders, tiny_args


def test_killed_run_resumes(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=60)
    out, cache = tmp_path / "runs", str(tmp_path / "cache")
    cmd = [sys.executable, "-m", "tunevision.cli.main", "train", str(data),
           *tiny_args(cache, out, "--mode", "finetune", "--epochs", "40", "--name", "r", "--batch-size", "4")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = out / "r" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(csv.DictReader(open(metrics))))
    assert 2 <= done_before < 40, "the run should have been killed mid-way"
    assert (out / "r" / "checkpoint.pt").is_file() and (out / "r" / "model" / "model.json").is_file()

    r = subprocess.run([sys.executable, "-m", "tunevision.cli.main", "train", "--resume", str(out / "r")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(metrics))]
    assert epochs == list(range(1, 41))
