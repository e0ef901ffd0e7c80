"""`fit`, the recipe: prepare the data, build the model, train, calibrate, evaluate, save.

The loops are in `loops.py`, the step in `optim.py`, the run folder's files in `rundir.py`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunevision.classify import multilabel
from tunevision.classify.audit import audit_features, audit_prepared, audit_views
from tunevision.classify.evaluate import Evaluation
from tunevision.classify.inference import predict_probs
from tunevision.classify.initial import initial_model
from tunevision.classify.loops import fit_head, fit_network, warm_head
from tunevision.classify.lr_range import run_lr_range_test
from tunevision.classify.multilabel import MultiLabelEvaluation
from tunevision.classify.partial import fit_partial
from tunevision.classify.plan import fit_within_budget
from tunevision.classify.prepare import Data, prepare_data
from tunevision.classify.reader import body_fingerprint
from tunevision.classify.report import write_report
from tunevision.core.config import CACHED_MODES, CLASSIFY, HEAD_MODES, RunConfig
from tunevision.core.distributed import Dist, init_from_env, shutdown
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, Runtime, resolve_runtime
from tunevision.core.ui import RunLog
from tunevision.data.inputs import relative_names
from tunevision.data.sources import channel_stats
from tunevision.engine.calibrate import expected_calibration_error, fit_temperature
from tunevision.engine.objective import binary_cross_entropy, objective_for
from tunevision.engine.run import guarded_run, open_run
from tunevision.engine.rundir import EpochRecord, RunFolder, write_dataset_files
from tunevision.models.backbones import (
    Backbone,
    Classifier,
    build_classifier,
    count_parameters,
)
from tunevision.models.bundle import BundleMeta, save_bundle


@dataclass
class FitResult:
    run_dir: Path
    best_acc: float
    best_epoch: int
    seconds: float
    history: list[EpochRecord] = field(default_factory=list)
    evaluation: Evaluation | None = None
    model: Classifier | None = None
    meta: BundleMeta | None = None


def fit(cfg: RunConfig, *, log: RunLog | None = None, resume_dir: Path | None = None) -> FitResult:
    """Train per `cfg`, writing everything into a run folder; returns where and how well, and the model. Under
    torchrun, every rank calls this; rank 0 alone writes, and the others return a result without a model.
    The task table (`tunevision.tasks`) sends detection and segmentation data elsewhere."""
    started, log = time.perf_counter(), log or RunLog()
    d = init_from_env(cfg.train.device)
    try:
        if not d.main:
            log = RunLog(quiet=True)
        cfg, run_dir, resume = d.broadcast(open_run(cfg, resume_dir, cfg.train.mode) if d.main else None)
        created = d.main and not run_dir.exists()
        if d.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            log.log_file = run_dir / "train.log"
        with guarded_run(run_dir, created, log, d.main):
            result = _fit(cfg, run_dir, resume, log, started, d)
            d.barrier()  # the other ranks wait while rank 0 calibrates, evaluates and writes
            return result
    finally:
        shutdown(d)


def _fit(cfg: RunConfig, run_dir: Path, resume: dict | None, log: RunLog, started: float, d: Dist) -> FitResult:
    cfg = cfg.for_task(cfg.data.task if cfg.data.task in CLASSIFY else "classify")
    torch.manual_seed(cfg.train.seed)
    # head modes run the backbone only for inference (feature extraction); the others train it
    rt = resolve_runtime(cfg.train.device, cfg.train.precision, training=cfg.train.mode not in HEAD_MODES)
    with log.stage("backbone"):
        architecture, backbone, previous = initial_model(cfg)
    data = prepare_data(cfg, backbone, log, d)
    if d.main:
        describe_data(data, cfg, run_dir, log)
    model, meta = build_model(cfg, architecture, backbone, data, previous, resume, rt, log)
    if d.main and cfg.data.audit:
        audit_in_run(model, data, cfg, rt, run_dir, log, d)
    if cfg.train.sync_bn and d.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    cfg = d.broadcast(resolve_config(cfg, model, data, rt, run_dir, log) if d.main else None)
    score = objective_for(data.val_labels).score_name
    folder = RunFolder(run_dir, cfg, meta, log, resume, score) if d.main else None
    on_epoch = folder.on_epoch if folder else None
    with log.stage("training"):
        history, plan = train_by_mode(model, data, cfg, rt, log, on_epoch, resume, d, started)
    if folder is None:  # ranks other than 0 are done: rank 0 calibrates, evaluates and writes
        return FitResult(run_dir, math.nan, 0, time.perf_counter() - started, history)
    folder.close()
    trained_at = time.perf_counter()
    model.load_state_dict(folder.best["state"])
    with log.stage("calibration and evaluation"):
        evaluation, ece = calibrate_and_evaluate(model, meta, data, cfg, run_dir)
    result = FitResult(run_dir, folder.best["score"], folder.best["epoch"], time.perf_counter() - started, history,
                       evaluation, model, meta)
    summary = finish_run(result, cfg, data, folder, ece, log, {"plan": plan.to_dict()} if plan else None)
    if plan is not None:  # the finish is measured once the report exists; summary.json gets the whole plan
        plan.stages[-1].measured_s = round(time.perf_counter() - trained_at, 1)
        summary.update(plan=plan.to_dict(), wall_seconds=round(time.perf_counter() - started, 1))
        log.info(plan.describe().replace("plan for", "plan and measured times for", 1))
    wall = time.perf_counter() - started
    folder.write_summary({**summary, "seconds": round(wall, 2), "stages": log.stage_table(wall)})
    log.describe_stages(wall)
    return result


def train_by_mode(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, on_epoch, resume,
                  d: Dist, started: float) -> tuple[list[EpochRecord], object]:
    """The mode's training: the time-budget plan, the cached head, partial fine-tuning, or the whole network."""
    plan = None
    if cfg.train.mode == "auto" and cfg.train.time_budget:
        history, plan = fit_within_budget(model, data, cfg, rt, log, on_epoch, d, started)
    elif cfg.train.mode in HEAD_MODES:
        history = fit_head(model, data, cfg, rt, log, on_epoch, d)
    elif cfg.train.mode == "partial":
        history = fit_partial(model, data, cfg, rt, log, on_epoch, d)
    else:
        if cfg.train.freeze_epochs and cfg.train.mode == "finetune" and not resume:
            warm_head(model, data, cfg, rt, log, d)
        history = fit_network(model, data, cfg, rt, log, on_epoch, resume, d)
    return history, plan


def describe_data(data: Data, cfg: RunConfig, run_dir: Path, log: RunLog) -> None:
    ds = data.dataset
    write_dataset_files(run_dir, data)
    log.info(f"[bold]data[/] {cfg.data.data}: {ds.layout}; {len(ds.classes)} classes, "
             f"{len(data.train)} train / {len(data.val)} val images, {len(ds.skipped)} skipped")
    for s in ds.skipped[:20]:
        log.info(f"  skipped {s.path}: {s.reason}")
    if len(ds.skipped) > 20:
        log.info(f"  ... and {len(ds.skipped) - 20} more, all listed in {run_dir / 'skipped.csv'}")
    if ds.fixes:
        log.info(f"fixes from {ds.fixes['file']}: {ds.fixes['dropped']} image(s) dropped, {ds.fixes['relabelled']} "
                 f"relabelled (copy in {run_dir / 'fixes.csv'})")
    for warning in thin_classes(data):
        log.info(f"[yellow]warning: {warning}[/]")


def audit_in_run(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, run_dir: Path, log: RunLog, d: Dist
                 ) -> None:
    """The audit on the body as training starts (pretrained): its features are the ones head training caches (eval
    view, first augmented view), so in head modes it costs the checks and the validation images' augmented view.
    Not under torchrun (the other ranks would wait), not in scratch mode (an untrained body's features say
    nothing about the labels), and once per run folder (a resumed run keeps its audit)."""
    if d.enabled or (run_dir / "audit" / "audit.json").is_file():
        return
    if cfg.train.mode == "scratch":
        log.info("audit left out: the network starts untrained; `tunevision audit DATA` audits with pretrained "
                 "features")
        return
    with log.stage("audit"):
        was_training = model.training
        try:
            views = audit_features(model, data, cfg, rt, log, audit_views(data, cfg.train))
            audit_prepared(data, views, run_dir / "audit", cfg.train.seed, log)
        except TunevisionError as e:  # the audit informs; it never stops a training run
            log.info(f"[yellow]audit left out: {e}[/]")
        model.train(was_training)


def thin_classes(data: Data) -> list[str]:
    """A line per class too thin to learn or to score: under 2 images, or none in validation (its accuracy there
    would be undefined, and the overall accuracy says nothing about it)."""
    warnings = []
    for i, c in enumerate(data.dataset.classes):
        n_train, n_val = sum(s.has(i) for s in data.train), sum(s.has(i) for s in data.val)
        if n_train + n_val < 2:
            warnings.append(f"class {c!r} has {n_train + n_val} image; it needs at least 2 (one to train, one to "
                            "check), more for a model that generalises")
        elif n_val == 0:
            warnings.append(f"class {c!r} has no validation image; the validation scores say nothing about it")
    return warnings


def build_model(cfg: RunConfig, architecture: str, backbone: Backbone, data: Data, previous: Classifier | None,
                resume: dict | None, rt: Runtime, log: RunLog) -> tuple[Classifier, BundleMeta]:
    """The classifier to train (new Xavier head; a previous run's head when its classes match) and its bundle
    description, whose preprocessing is the data's."""
    if cfg.model.normalize == "data":
        backbone.mean, backbone.std = channel_stats(data.train_images)
        log.info(f"normalisation from the training images: mean {backbone.mean}, std {backbone.std}")
    classes = data.dataset.classes
    model = build_classifier(backbone, len(classes), cfg.model.dropout, multilabel=data.dataset.multilabel)
    if previous is not None and previous.head.out_features == len(classes):
        model.head.load_state_dict(previous.head.state_dict())
    if resume:
        model.load_state_dict(resume["model"])
    model = model.to(rt.device).to(memory_format=torch.channels_last)
    meta = BundleMeta(architecture=architecture, classes=classes, image_size=data.image_size,
                      task="multilabel" if data.dataset.multilabel else "classify",
                      resize_size=data.resize_size, mean=list(backbone.mean), std=list(backbone.std),
                      fit=data.prep.fit, preprocessing=data.prep.describe(), dropout=cfg.model.dropout, mode=cfg.train.mode, extra=training_data_record(cfg, data))
    total, _ = count_parameters(model)
    log.info(f"[bold]model[/] {architecture} ({total / 1e6:.1f} M parameters), mode {cfg.train.mode}, "
             f"{data.image_size}px, {rt.device}{' bf16' if rt.bf16 else ''}")
    return model, meta


def training_data_record(cfg: RunConfig, data: Data) -> dict:
    """What the bundle remembers of its data, so that `evaluate` on the same unsplit folder scores only the
    validation images instead of the ones the model was trained on."""
    if data.dataset.arrays is not None:  # MNIST, CIFAR-10 and arrays: images by index, not by file name
        return {}
    record = {"data": str(Path(cfg.data.data).expanduser().resolve()), "seed": cfg.train.seed,
              "val_fraction": cfg.data.val_fraction, "split": "given" if data.dataset.explicit_split else "seeded"}
    if cfg.data.label_column:  # evaluate reads the table's labels from the same column
        record["label_column"] = cfg.data.label_column
    if not data.dataset.explicit_split:  # which images trained it, by name: a re-drawn split would not know
        record["train_files"] = sorted(relative_names([s.path for s in data.train], cfg.data.data))
    return record


def resolve_config(cfg: RunConfig, model: Classifier, data: Data, rt: Runtime, run_dir: Path, log: RunLog
                   ) -> RunConfig:
    """The values the run really uses (the LR range test's suggestion, each mode's default epochs and LR, the
    image size) replace the 0/'auto' placeholders, and are what config.yaml records."""
    lr = cfg.train.lr
    if lr == "auto":
        lr, _, _ = run_lr_range_test(model, data, cfg, rt, run_dir / "lr_find.png")
        log.info(f"LR range test: body learning rate {lr:.2e} (plot {run_dir / 'lr_find.png'})")
    train = dataclasses.replace(cfg.train, lr=lr)
    train = dataclasses.replace(train, lr=train.resolved_lr(), epochs=train.resolved_epochs())
    cfg = dataclasses.replace(cfg, train=train, data=dataclasses.replace(cfg.data, image_size=data.image_size))
    cfg.save(run_dir / "config.yaml")
    return cfg


def calibrate_and_evaluate(model: Classifier, meta: BundleMeta, data: Data, cfg: RunConfig, run_dir: Path
                           ) -> tuple[Evaluation, tuple[float, float]]:
    """Fit the temperature on validation logits, save the final bundle, write eval/; returns ECE before/after
    (multi-label: per-label temperatures and F1 thresholds, and the binary cross-entropy before/after)."""
    raw = validation_probs(model, data, cfg)
    if data.dataset.multilabel:
        return calibrate_labels(raw, model, meta, data, run_dir)
    # log-probabilities are logits up to a per-row constant, which softmax(x / T) ignores
    logits = torch.from_numpy(np.log(np.clip(raw, 1e-12, None)))
    labels = data.val_labels
    meta.temperature = fit_temperature(logits, labels)
    probs = torch.softmax(logits / meta.temperature, 1).numpy()
    ece = (expected_calibration_error(raw, labels.numpy()), expected_calibration_error(probs, labels.numpy()))
    if ece[1] > ece[0]:  # T minimises NLL, not ECE; on tiny validation sets it can miss: then stay uncalibrated
        meta.temperature, probs, ece = 1.0, raw, (ece[0], ece[0])
    save_bundle(model, meta, run_dir / "model")
    evaluation = Evaluation(data.dataset.classes, labels.numpy(), probs, [s.path for s in data.val])
    evaluation.write(run_dir / "eval")
    np.save(run_dir / "eval" / "val_logits.npy", logits.numpy())
    return evaluation, ece


def calibrate_labels(raw: np.ndarray, model: Classifier, meta: BundleMeta, data: Data, run_dir: Path
                     ) -> tuple[MultiLabelEvaluation, tuple[float, float]]:
    """Multi-label: a temperature and an F1-maximising threshold per label, both stored in the bundle."""
    p = np.clip(raw, 1e-7, 1 - 1e-7)
    logits, targets = np.log(p) - np.log1p(-p), data.val_labels.numpy()
    temperatures, thresholds, probs = multilabel.calibrate(logits, targets)
    meta.extra.update(temperatures=[round(float(t), 4) for t in temperatures],
                      thresholds=[round(float(t), 4) for t in thresholds])
    save_bundle(model, meta, run_dir / "model")
    evaluation = MultiLabelEvaluation(data.dataset.classes, targets, probs, [s.path for s in data.val],
                                      np.array(meta.extra["thresholds"]))
    evaluation.write(run_dir / "eval")
    np.save(run_dir / "eval" / "val_logits.npy", logits.astype(np.float32))
    return evaluation, (binary_cross_entropy(raw, targets), binary_cross_entropy(probs, targets))


def validation_probs(model: Classifier, data: Data, cfg: RunConfig) -> np.ndarray:
    """Softmax over the validation images in the precision that predict, serve and exports use (fp32). A frozen
    body's fp32 validation features, kept from training, give them exactly with the head alone: no second pass."""
    model.eval()
    kept = data.val_features
    if kept is not None and kept[0] == body_fingerprint(model):
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model.forward_head(kept[1].to(device)).float()
            return (torch.sigmoid(logits) if model.multilabel else torch.softmax(logits, 1)).cpu().numpy()
    return predict_probs(model, data.val_images, resolve_runtime(cfg.train.device, INFERENCE_PRECISION),
                         data.image_size)


def finish_run(result: FitResult, cfg: RunConfig, data: Data, folder: RunFolder, ece: tuple[float, float],
               log: RunLog, extra: dict | None = None) -> dict:
    """summary.json (with `extra`), the per-class table, the report, the closing lines; the checkpoint goes unless
    kept. Returns the summary."""
    ds, meta, evaluation, run_dir = data.dataset, result.meta, result.evaluation, result.run_dir
    summary = {
        "best_val_acc": result.best_acc, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        **evaluation.summary(), "seconds": round(result.seconds, 2), "bundle": str(run_dir / "model"),
        "classes": ds.classes, "train_images": len(data.train), "val_images": len(data.val),
        "skipped": len(ds.skipped), "fixes": ds.fixes or None, "mode": cfg.train.mode, "backbone": meta.architecture,
        "command": " ".join(sys.argv), "temperature": round(meta.temperature, 4), "ece_before": round(ece[0], 4),
        "ece_after": round(ece[1], 4), "stages": log.stage_table(result.seconds), **(extra or {})}
    folder.write_summary(summary)
    for line in evaluation.per_class_lines():
        log.info(line)
    folder.finish(lambda: write_report(run_dir))
    log.info(evaluation.calibration_line(meta, ece))
    log.info(f"[bold green]done[/] val {evaluation.headline()} (best epoch {result.best_epoch}) in "
             f"{result.seconds:.1f}s; run folder {run_dir}; bundle {run_dir / 'model'}")
    return summary


def compare_modes(cfg: RunConfig, modes: list[str], *, log: RunLog | None = None
                  ) -> list[tuple[str, int, FitResult]]:
    """Train once per mode on the same data and split: (mode, epochs, result) each. Whole-network modes share one
    epoch count (the configured one, else fine-tuning's default) so that only the initialisation differs;
    head modes keep theirs, since their epochs are passes over cached features. Writes compare.json."""
    shared = cfg.train.epochs or dataclasses.replace(cfg.train, mode="finetune").resolved_epochs()
    rows = []
    for mode in modes:
        epochs = cfg.train.epochs if mode in CACHED_MODES else shared
        run = dataclasses.replace(cfg, name=f"{cfg.name}-{mode}" if cfg.name else "",
                                  train=cfg.train.for_mode(mode, epochs=epochs))
        result = fit(run, log=log)
        rows.append((mode, run.train.resolved_epochs(), result))
    summary = [{"mode": m, "epochs": e, "best_val_acc": r.best_acc, "final_val_acc": r.evaluation.accuracy,
                "seconds": round(r.seconds, 1), "run_dir": str(r.run_dir)} for m, e, r in rows]
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "compare.json").write_text(json.dumps(summary, indent=2))
    return rows
