"""Two processes with the gloo backend (torchrun --standalone): the same result as one process with the same global
batch, one run folder, sharded feature extraction equal to the single-process features, and a dead rank that ends
the run (which --resume then completes)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_class_folders

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def train_args(data: Path, out: Path, cache: Path, name: str, *extra: str) -> list[str]:
    return ["-m", "tunevision", "train", str(data), "--backbone", "tiny_cnn_gn", "--no-pretrained", "--device", "cpu",
            "--precision", "fp32", "--augment", "none", "--cache-dir", str(cache), "--out", str(out), "--name", name,
            "--batch-size", "8", *extra]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 15 per class: 12 train + 3 val each, so 24 training images = 3 global batches of 8 (4 per rank)
    return make_class_folders(tmp_path_factory.mktemp("ddp") / "d", n=15)


def test_two_processes_equal_one_with_the_same_global_batch(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    extra = ("--mode", "finetune", "--epochs", "3", "--lr", "0.01", "--freeze-epochs", "5")
    run([sys.executable, *train_args(data, out, tmp_path / "c1", "single", *extra)])
    run([*TORCHRUN, *train_args(data, out, tmp_path / "c2", "ddp", *extra)])
    assert sorted(p.name for p in out.iterdir()) == ["ddp", "single"]  # rank 1 wrote no run folder of its own
    single, ddp = (load_file(str(out / n / "model" / "model.safetensors")) for n in ("single", "ddp"))
    assert single.keys() == ddp.keys()
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-5), k
    rows = [list(csv.DictReader(open(out / n / "metrics.csv"))) for n in ("single", "ddp")]
    assert [r["val_acc"] for r in rows[0]] == [r["val_acc"] for r in rows[1]]
    assert abs(float(rows[0][-1]["train_loss"]) - float(rows[1][-1]["train_loss"])) < 1e-4  # the ranks' mean
    assert (out / "ddp" / "report.html").is_file() and (out / "ddp" / "model" / "model.json").is_file()


def test_sharded_feature_extraction_equals_one_process(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    # no audit: under torchrun there is none, and its validation view would be a feature file the other lacks
    extra = ("--mode", "freeze", "--epochs", "5", "--views", "1", "--augment", "hflip", "--no-audit")
    run([sys.executable, *train_args(data, out, tmp_path / "c1", "single", *extra)])
    run([sys.executable, *train_args(data, out, tmp_path / "c2", "ddp", *extra), "--nproc", "2"])  # runs torchrun
    files = {p.name: p for p in (tmp_path / "c1" / "features").glob("*.safetensors")}
    other = {p.name: p for p in (tmp_path / "c2" / "features").glob("*.safetensors")}
    assert len(files) == 3 and files.keys() == other.keys()  # val, train, one augmented view; same cache keys
    for name in files:
        a, b = load_file(str(files[name]))["features"], load_file(str(other[name]))["features"]
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), name
    assert len(list((tmp_path / "c2" / "images").glob("*.npy"))) == 2  # decoded once, written by rank 0 only
    single, ddp = (load_file(str(out / n / "model" / "model.safetensors")) for n in ("single", "ddp"))
    assert torch.allclose(single["head.weight"], ddp["head.weight"], atol=1e-5)


def _worker_pid(parent: int, local_rank: str) -> int | None:
    """The torchrun worker of `parent` whose environment says LOCAL_RANK=local_rank (from /proc; no psutil)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_dead_rank_ends_the_run_and_resume_completes_it(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=40)
    out = tmp_path / "runs"
    cmd = [*TORCHRUN, *train_args(data, out, tmp_path / "c", "k", "--mode", "finetune", "--epochs", "30",
                                  "--freeze-epochs", "0", "--batch-size", "4", "--keep-checkpoint")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "k" / "metrics.csv"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    victim = _worker_pid(proc.pid, "1")
    assert victim, "no rank-1 worker found"
    os.kill(victim, signal.SIGKILL)
    started = time.time()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - started < 120  # ended, not hung
    assert "failed" in output.lower() and "local_rank: 1" in output.lower().replace("local_rank : 1", "local_rank: 1")
    done = len(list(csv.DictReader(open(metrics))))
    assert 2 <= done < 30
    run([sys.executable, "-m", "tunevision", "train", "--resume", str(out / "k")])
    assert [int(r["epoch"]) for r in csv.DictReader(open(metrics))] == list(range(1, 31))


def test_a_multilabel_run_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    from tests.test_multilabel import write_csv, write_scenes
    # 30 images: 24 train = 3 global batches of 8 (4 per rank), so both runs take the same steps
    csv_path = write_csv(tmp_path / "d", write_scenes(tmp_path / "d", n=30), "onehot")
    out = tmp_path / "runs"
    extra = ("--mode", "finetune", "--epochs", "2", "--lr", "0.01", "--freeze-epochs", "0")
    run([sys.executable, *train_args(csv_path, out, tmp_path / "c1", "single", *extra)])
    run([*TORCHRUN, *train_args(csv_path, out, tmp_path / "c2", "ddp", *extra)])
    single, ddp = (load_file(str(out / n / "model" / "model.safetensors")) for n in ("single", "ddp"))
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-5), k
    assert '"task": "multilabel"' in (out / "ddp" / "model" / "model.json").read_text()
