"""A run folder's bookkeeping: its name, the dataset files, metrics, the best weights, checkpoints, summary.

Every file is written atomically (temp file, then rename), so a run killed at any moment leaves either
the previous version of a file or the new one, never half of one.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tunevision.models.bundle import BundleMeta, save_bundle
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.ui import RunLog
from tunevision.core.atomic import atomic_write, write_csv


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    ema_val_acc: float = math.nan  # the EMA weights' accuracy, when --ema is on
    size: int = 0                  # the training input size of this epoch (progressive resizing)


def new_run_dir(cfg: RunConfig) -> Path:
    root = Path(cfg.out).expanduser()
    if cfg.name:
        return root / cfg.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.data.data.rstrip("/").split(":")[-1]).name or "data")
    kind = cfg.data.task if cfg.data.task in ("detect", "segment") else cfg.train.mode
    n = 1
    while (root / f"{stem}-{kind}-{n}").exists():
        n += 1
    return root / f"{stem}-{kind}-{n}"


def write_dataset_files(run_dir: Path, data) -> None:
    """dataset.json (source, classes, counts), skipped.csv and split.csv: what the run trained and scored on."""
    ds = data.dataset
    atomic_write(run_dir / "dataset.json", lambda p: p.write_text(json.dumps({
        "source": ds.layout, "classes": ds.classes, "counts": {
            "train": {c: sum(s.label == i for s in data.train) for i, c in enumerate(ds.classes)},
            "val": {c: sum(s.label == i for s in data.val) for i, c in enumerate(ds.classes)}},
        "skipped": len(ds.skipped), "image_size": data.image_size, "resize_size": data.resize_size}, indent=2)))
    write_csv(run_dir / "skipped.csv", ["path", "reason"], [(s.path, s.reason) for s in ds.skipped])
    write_csv(run_dir / "split.csv", ["path", "label", "split"],
              [(s.path, ds.classes[s.label], split) for split, ss in (("train", data.train), ("val", data.val))
               for s in ss])


def write_metrics(run_dir: Path, history: list[EpochRecord]) -> None:
    write_csv(run_dir / "metrics.csv", list(EpochRecord.__dataclass_fields__),
              [[r.epoch, f"{r.train_loss:.5f}", f"{r.train_acc:.5f}", f"{r.val_loss:.5f}", f"{r.val_acc:.5f}",
                f"{r.lr:.3g}", f"{r.seconds:.2f}", f"{r.ema_val_acc:.5f}", r.size] for r in history])


def read_metrics(run_dir: Path) -> list[EpochRecord]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    types = {k: f.type for k, f in EpochRecord.__dataclass_fields__.items()}
    return [EpochRecord(**{k: (int(float(v)) if types[k] == "int" else float(v)) for k, v in row.items()
                           if k in types and v != ""}) for row in csv.DictReader(open(path))]


class RunFolder:
    """The folder of one run and what it keeps across epochs: the best weights (by accuracy, then loss), the
    metrics table, the latest checkpoint, TensorBoard events. `on_epoch` is all a training loop calls."""

    def __init__(self, path: Path, cfg: RunConfig, meta: BundleMeta, log: RunLog, resume: dict | None = None):
        self.path, self.cfg, self.meta, self.log = path, cfg, meta, log
        self.best = {"acc": -1.0, "loss": math.inf, "epoch": 0, "state": None}
        if resume:
            self.best.update(acc=resume["best_acc"], loss=resume.get("best_loss", math.inf),
                             epoch=resume["best_epoch"], state=resume.get("best_state"))
        self.writer = None
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TunevisionError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.writer = SummaryWriter(str(path / "tensorboard"))

    def on_epoch(self, history: list[EpochRecord], model: torch.nn.Module, checkpoint: Callable[[], dict] | None
                 ) -> bool:
        """Log, keep the best weights, write metrics (and bundle + checkpoint when given); True = stop early."""
        r, best = history[-1], self.best
        improved = r.val_acc > best["acc"] or (r.val_acc == best["acc"] and r.val_loss < best["loss"])
        if improved:
            best.update(acc=r.val_acc, loss=r.val_loss, epoch=r.epoch,
                        state=copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}))
        if checkpoint is not None or improved or r.epoch == self.cfg.train.resolved_epochs():
            self.log.info(f"epoch {r.epoch:3d}  train loss {r.train_loss:.4f} acc {r.train_acc:.3f}  val loss "
                          f"{r.val_loss:.4f} acc {r.val_acc:.4f}{'  *' if improved else ''}  {r.seconds:.1f}s")
        write_metrics(self.path, history)
        if self.writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                self.writer.add_scalar(key, getattr(r, key), r.epoch)
            self.writer.flush()
        if checkpoint is not None:
            if improved:
                save_bundle(model, self.meta, self.path / "model")
            self.save_checkpoint(checkpoint())
        patience = self.cfg.train.early_stopping
        return bool(patience) and r.epoch - best["epoch"] >= patience

    def save_checkpoint(self, state: dict) -> None:
        b = self.best
        state.update(best_acc=b["acc"], best_loss=b["loss"], best_epoch=b["epoch"], best_state=b["state"])
        atomic_write(self.path / "checkpoint.pt", lambda p: torch.save(state, p))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a checkpoint cut short by a full disk or a crash outside atomic_write
        raise TunevisionError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it to restart the run "
                              "from its last saved bundle, or start a new run") from None


def remove_failed_run(run_dir: Path, created: bool) -> None:
    """A run that failed before its first epoch leaves nothing behind (and no used-up run number)."""
    if created and run_dir.is_dir() and not (run_dir / "metrics.csv").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
