"""`tunevision audit DATA`, and the audit inside every classification run: the frozen body's features of every
image, eval view and head training's first augmented view (from the feature cache head training also uses), then
every check of `tunevision.auditing`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tunevision.auditing.findings import Audited, rows, run_audit
from tunevision.auditing.page import leakage_line, write_audit
from tunevision.classify.initial import initial_model
from tunevision.classify.loops import AUTO_VIEW_BUDGET
from tunevision.classify.prepare import Data, ResizedImages, prepare_data
from tunevision.classify.reader import (
    TRAIN_EVAL,
    VAL_EVAL,
    augmented_key,
    feature_reader,
    feature_views,
)
from tunevision.core.config import RunConfig, TrainConfig
from tunevision.core.runtime import Runtime, resolve_runtime
from tunevision.core.ui import RunLog
from tunevision.data.discover import task_name_for_data
from tunevision.engine.rundir import new_run_dir, write_dataset_files
from tunevision.models.backbones import Classifier, StageFeatures, build_classifier


@dataclass
class AuditResult:
    """What `tv.audit` returns: the run's folder, audit.csv's rows (path, issue, score, given, suggested, other,
    action) and audit.json's summary."""
    folder: Path
    rows: list[dict]
    summary: dict
    seconds: float

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.summary.get("issues", {}).items())) or "no issue"
        return f"AuditResult({self.summary.get('images', 0)} images: {counts}; folder={str(self.folder)!r})"

    def issues(self, issue: str) -> list[dict]:
        """The rows of one issue (label, duplicate, leakage, outlier, dark, light, blurry, low information,
        odd size)."""
        return [r for r in self.rows if r["issue"] == issue]


# Augmented views beside the eval view whose probabilities the label heads average: the first of head training's
# views, so that a run's audit reads the training images' from its cache. More did not pay: hymenoptera precision /
# recall 0.87 / 0.80 with one, 0.82 / 0.79 with three, 0.83 / 0.79 with five (30 flip seeds)
AUDIT_VIEWS = 1


def audit_views(data: Data, t: TrainConfig) -> int:
    """Augmented views the audit reads: AUDIT_VIEWS up to the training set size whose views auto mode caches. None
    beyond it, where the view would be a pass over every training image for the audit alone, nor in a run with a
    time budget, whose plan may cache no view and whose seconds are for training; nor for one class (a detector's
    raccoons), which leaves the label heads nothing to doubt."""
    wanted = len(data.train) <= AUTO_VIEW_BUDGET and not t.time_budget and len(data.dataset.classes) > 1
    return AUDIT_VIEWS if wanted else 0


def audit_features(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, augmented: int = 0
                   ) -> list[np.ndarray]:
    """(train + val, features) of the frozen body: the eval view, then `augmented` augmented views (head
    training's first ones: the same draws and cache entries); read from the cache when a run computed them."""
    model.eval()
    eval_view, *views = feature_views(cfg.train, data, augmented)
    with log.progress((len(data.train) + len(data.val)) * (1 + augmented), "features for the audit") as advance:
        _, read = feature_reader(model, data, cfg, rt, log, advance)
        out = [torch.cat([read(data.train_images, TRAIN_EVAL, eval_view), read(data.val_images, VAL_EVAL, eval_view)])]
        out += [torch.cat([read(data.train_images, augmented_key("train", cfg.train, v), view),
                           read(data.val_images, augmented_key("val", cfg.train, v), view)])
                for v, view in enumerate(views)]
    # single-label checks read the final features: with the stages' beside them, hymenoptera's seeded flips were
    # found at precision / recall 0.55 / 0.76 instead of 0.89 / 0.78 (benchmarks/audit.py)
    final = model.body.final_width if isinstance(model.body, StageFeatures) and not data.dataset.multilabel else 0
    return [f[:, -final:].numpy() if final else f.numpy() for f in out]


def file_size(path: str) -> tuple[int, int] | None:
    """A file's own (width, height) from its header (the decoded squares have lost it); None for archives."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # archives' "SOURCE#i" and anything PIL cannot open: no size check for it
        return None


def native(images):
    """Small squares (MNIST's 28 px) at their own size rather than resized on each read: the checks shrink every
    image to a few dozen pixels anyway, and reading MNIST's 10,000 digits at 292 px one by one took 31 of its
    audit's 43 s."""
    return images.images if isinstance(images, ResizedImages) else images


def audited(data: Data, views: list[np.ndarray]) -> Audited:
    samples = data.train + data.val
    sizes = [file_size(s.path) for s in samples]
    arrays = data.dataset.arrays  # MNIST, CIFAR-10: no file to read a size from; the arrays' own side
    own = min(arrays.shape[1:3]) if arrays is not None else 0
    classes = data.dataset.classes
    sets = (np.array([[s.has(j) for j in range(len(classes))] for s in samples], np.uint8)
            if data.dataset.multilabel else None)
    return Audited(paths=[s.path for s in samples], splits=["train"] * len(data.train) + ["val"] * len(data.val),
                   labels=np.array([s.label for s in samples], int), classes=classes,
                   features=views[0], image_sets=(native(data.train_images), native(data.val_images)), sizes=sizes,
                   views=views[1:], sides=np.array([min(z) if z else own for z in sizes], int), label_sets=sets)


def audit_prepared(data: Data, views: list[np.ndarray], folder: Path, seed: int, log: RunLog) -> AuditResult:
    """Every check on prepared data and the features of its views (`audit_features`); writes audit.csv,
    audit.json and audit.html in `folder`."""
    started = time.perf_counter()
    a = audited(data, views)
    findings, summary = run_audit(a, seed=seed)
    position = {p: i for i, p in enumerate(a.paths)}
    n_train = len(data.train)

    def image(path: str) -> np.ndarray | None:
        i = position.get(path)
        if i is None:
            return None
        return np.asarray(data.train_images[i] if i < n_train else data.val_images[i - n_train])
    summary["seconds"] = round(time.perf_counter() - started, 2)
    table = rows(a, findings)
    write_audit(folder, table, summary, image)
    describe(summary, folder, log)
    return AuditResult(folder, table, summary, summary["seconds"])


def describe(summary: dict, folder: Path, log: RunLog) -> None:
    counts = ", ".join(f"{n} {issue}" for issue, n in sorted(summary["issues"].items())) or "no issue found"
    log.info(f"[bold]audit[/] {summary['images']} images: {counts}; {folder / 'audit.html'}")
    if summary.get("leaked_val"):
        log.info(f"[yellow]{leakage_line(summary)}[/]")


def images_task(cfg: RunConfig) -> str:
    """The classification task whose images the audit and `embed` read: detection and segmentation data (found by
    content, or asked for) as multi-label data, each image labelled with its objects' classes, so that the masks
    beside the photos are never taken for photos; else the data's own task."""
    task = task_name_for_data(cfg)
    return "multilabel" if task in ("detect", "segment", "multilabel") else "classify"


def pretrained(cfg: RunConfig, log: RunLog) -> tuple[RunConfig, Data, Classifier, Runtime]:
    """The data `cfg` names, prepared, and the pretrained body (or --weights) whose features the audit and
    `tunevision embed DATA` read."""
    cfg = cfg.for_task(images_task(cfg))
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    torch.manual_seed(cfg.train.seed)  # as a run seeds it: an untrained body then has the run's weights and features
    with log.stage("backbone"):
        _, backbone, _ = initial_model(cfg)
    data = prepare_data(cfg, backbone, log, training=False)
    model = build_classifier(backbone, len(data.dataset.classes), 0.0).to(rt.device)
    return cfg, data, model.to(memory_format=torch.channels_last), rt


def audit(cfg: RunConfig, *, log: RunLog | None = None, out: str | Path | None = None) -> AuditResult:
    """Audit the data `cfg` names with the pretrained backbone (or --weights), in its own folder."""
    log = log or RunLog()
    cfg, data, model, rt = pretrained(cfg, log)
    folder = Path(out) if out else new_run_dir(cfg, "audit")
    folder.mkdir(parents=True, exist_ok=True)
    write_dataset_files(folder, data)
    views = audit_features(model, data, cfg, rt, log, audit_views(data, cfg.train))
    return audit_prepared(data, views, folder, cfg.train.seed, log)
