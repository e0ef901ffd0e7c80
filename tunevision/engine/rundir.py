"""A run folder's bookkeeping: its name, the dataset files, metrics, the best weights, checkpoints, summary.

Every file is written atomically (temp file, then rename), so a run killed at any moment leaves either
the previous version of a file or the new one, never half of one.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from tunevision.core.atomic import atomic_write, write_csv
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.ui import RunLog
from tunevision.models.bundle import BundleMeta, save_bundle


@dataclass
class EpochRecord:
    """One classification epoch; the best epoch has the highest accuracy, then the lowest loss."""
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    ema_val_acc: float = math.nan  # the EMA weights' accuracy, when --ema is on
    size: int = 0                  # the training input size of this epoch (progressive resizing)

    def key(self) -> tuple[float, ...]:
        return (self.val_acc, -self.val_loss)

    def line(self, score: str = "acc") -> str:
        """score: what val_acc holds (accuracy; a multi-label run's macro mAP, its train_acc the exact-match rate)."""
        train = "acc" if score == "acc" else "exact"
        return (f"epoch {self.epoch:3d}  train loss {self.train_loss:.4f} {train} {self.train_acc:.3f}  val loss "
                f"{self.val_loss:.4f} {score} {self.val_acc:.4f}")


class Record(Protocol):
    """What the run engine needs of a task's epoch record (a dataclass): its epoch, its ranking and its log line."""
    epoch: int

    def key(self) -> tuple[float, ...]: ...

    def line(self, score: str) -> str: ...


def new_run_dir(cfg: RunConfig, kind: str) -> Path:
    """OUT/NAME, or OUT/DATA-KIND-N with the first free N (KIND: the task, or classification's mode)."""
    root = Path(cfg.out).expanduser()
    if cfg.name:
        return root / cfg.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.data.data.rstrip("/").split(":")[-1]).name or "data")
    n = 1
    while (root / f"{stem}-{kind}-{n}").exists():
        n += 1
    return root / f"{stem}-{kind}-{n}"


def write_dataset_files(run_dir: Path, data) -> None:
    """dataset.json (source, classes, counts), skipped.csv and split.csv: what the run trained and scored on."""
    ds = data.dataset
    atomic_write(run_dir / "dataset.json", lambda p: p.write_text(json.dumps({
        "source": ds.layout, "classes": ds.classes, "counts": {
            "train": {c: sum(s.has(i) for s in data.train) for i, c in enumerate(ds.classes)},
            "val": {c: sum(s.has(i) for s in data.val) for i, c in enumerate(ds.classes)}},
        "skipped": len(ds.skipped), "fixes": ds.fixes or None, "image_size": data.image_size,
        "resize_size": data.resize_size, "fit": data.prep.fit}, indent=2)))
    write_csv(run_dir / "skipped.csv", ["path", "reason"], [(s.path, s.reason) for s in ds.skipped])
    if ds.fixes:  # the decisions this run trained with, as they were when it started
        fixes = Path(ds.fixes["file"])
        atomic_write(run_dir / "fixes.csv", lambda p: p.write_bytes(fixes.read_bytes()))
    write_csv(run_dir / "split.csv", ["path", "label", "split"],
              [(s.path, ";".join(ds.classes[i] for i in s.labels) if s.labels is not None else ds.classes[s.label],
                split) for split, ss in (("train", data.train), ("val", data.val))
               for s in ss])


def write_metrics(run_dir: Path, history: list) -> None:
    """metrics.csv: one row per epoch record (any task's dataclass), floats to 6 significant digits."""
    if history:
        fields = [f.name for f in dataclasses.fields(history[0])]
        write_csv(run_dir / "metrics.csv", fields, [[f"{v:.6g}" if isinstance(v, float) else v
                                                    for v in dataclasses.astuple(r)] for r in history])


def read_metrics(run_dir: Path, record: type = EpochRecord) -> list:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    types = {f.name: f.type for f in dataclasses.fields(record)}
    return [record(**{k: (int(float(v)) if types[k] == "int" else float(v)) for k, v in row.items()
                      if k in types and v != ""}) for row in csv.DictReader(open(path))]


class RunFolder:
    """The folder of one run, for every task, and what it keeps across epochs: the best weights (by the records'
    `key`), the metrics table, the latest checkpoint and bundle, TensorBoard events, early stopping. `on_epoch` is
    all a training loop calls."""

    def __init__(self, path: Path, cfg: RunConfig, meta: BundleMeta, log: RunLog, resume: dict | None = None,
                 score: str = "acc"):
        self.path, self.cfg, self.meta, self.log, self.score = path, cfg, meta, log, score
        self.best = {"key": (-math.inf,), "score": -1.0, "epoch": 0, "state": None}
        if resume:
            key = tuple(resume["best_key"])
            self.best.update(key=key, score=key[0], epoch=resume["best_epoch"], state=resume.get("best_state"))
        self.writer = None
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TunevisionError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.writer = SummaryWriter(str(path / "tensorboard"))

    def on_epoch(self, history: list[Record], model: torch.nn.Module, checkpoint: Callable[[], dict] | None,
                 line: str = "") -> bool:
        """Log, keep the best weights, write metrics (and bundle + checkpoint when given); True = stop early.
        `line`: the epoch's log line when the task says more than its record's own."""
        r, best = history[-1], self.best
        improved = r.key() > best["key"]
        if improved:
            best.update(key=r.key(), score=r.key()[0], epoch=r.epoch,
                        state=copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}))
        if checkpoint is not None or improved or r.epoch == self.cfg.train.resolved_epochs():
            self.log.info(f"{line or r.line(self.score)}{'  *' if improved else ''}  {r.seconds:.1f}s")
        write_metrics(self.path, history)
        if self.writer is not None:
            for key, value in dataclasses.asdict(r).items():
                if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, r.epoch)
            self.writer.flush()
        if checkpoint is not None:
            if improved:
                save_bundle(model, self.meta, self.path / "model")
            self.save_checkpoint(checkpoint())
        patience = self.cfg.train.early_stopping
        return bool(patience) and r.epoch - best["epoch"] >= patience

    def save_checkpoint(self, state: dict) -> None:
        b = self.best
        state.update(best_key=list(b["key"]), best_epoch=b["epoch"], best_state=b["state"])
        atomic_write(self.path / "checkpoint.pt", lambda p: torch.save(state, p))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self, write_report: Callable[[], Path]) -> None:
        """The end of every task's run, once the bundle and summary are saved: the report (a plotting problem is one
        line and loses nothing), then the checkpoint goes unless kept (the bundle holds the result)."""
        try:
            with self.log.stage("report"):
                self.log.info(f"report {write_report()}")
        except Exception as e:
            self.log.info(f"[yellow]report not written ({type(e).__name__}: {e}); retry with tunevision report "
                          f"{self.path}[/]")
        if not self.cfg.train.keep_checkpoint:
            (self.path / "checkpoint.pt").unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))


CHECKPOINT_KEYS = ("model", "optimizer", "history", "best_key", "best_epoch")


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        # weights_only: tensors, numbers, strings and containers only; a checkpoint that holds anything else
        # (code, objects) is refused instead of run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # cut short by a full disk or a crash outside atomic_write, or crafted
        raise TunevisionError(f"{path}: unreadable or unsafe checkpoint ({type(e).__name__}); delete it to restart "
                              "the run from its last saved bundle, or start a new run") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TunevisionError(f"{path}: not a tunevision checkpoint (no {missing[0]!r}); delete it, or start a new run")
    return state


def remove_failed_run(run_dir: Path, created: bool) -> None:
    """A run that failed before its first epoch leaves nothing behind (and no used-up run number)."""
    if created and run_dir.is_dir() and not (run_dir / "metrics.csv").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
