"""Fine-tuning a detector or a segmenter on the user's boxes and masks: `fit_scene`, on the shared run engine.

The recipe (torchvision's detection reference, scaled to a CPU): SGD with momentum, a one-cycle schedule,
horizontal flips and photometric jitter, multi-scale training; the best epoch by mAP@0.5:0.95 (mIoU for
masks) is kept. The backbone's stem and early stages and all its BatchNorm statistics stay frozen. The run
folder, best-state selection, checkpoints, resume, Ctrl-C/SIGTERM and failed-run cleanup are the engine's
(`engine.rundir.RunFolder`, `engine.run`), the same as classification's.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tunevision.core.atomic import atomic_write, write_csv
from tunevision.core.config import RunConfig, TrainConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.ui import RunLog
from tunevision.data.annotated import SceneData, split_indices
from tunevision.data.annotations import read_scene_data
from tunevision.data.fixes import drop_fixed_items
from tunevision.data.inputs import relative_names
from tunevision.data.scenes import (
    IGNORE,
    SceneSample,
    decode_scenes,
    detection_example,
    detection_transform,
    segmentation_example,
    segmentation_transform,
)
from tunevision.engine.run import guarded_run, open_run
from tunevision.engine.rundir import RunFolder, read_metrics
from tunevision.models.bundle import BundleMeta
from tunevision.models.detectors import HUB_DETECTORS, SceneSpec, create_scene_model
from tunevision.scene.evaluate import evaluation_items, primary, score_scenes
from tunevision.scene.predict import load_scene_bundle
from tunevision.scene.report import write_scene_report


@dataclass(frozen=True)
class TaskRecipe:
    arch: str
    image_size: int    # shorter side at evaluation; training samples sizes from 0.7x to 1x of it
    epochs: int
    lr: float


# the batch size, optimizer and weight decay defaults are the config's own (`by_task`), declared with the option
RECIPES = {"detect": TaskRecipe("fasterrcnn", 448, 10, 0.02),
           "segment": TaskRecipe("fpn", 384, 12, 0.02)}


@dataclass
class SceneRecord:
    epoch: int
    train_loss: float
    score: float       # the selection metric: mAP@0.5:0.95 or mIoU
    score_50: float    # mAP@0.5 (detection) or pixel accuracy (segmentation)
    lr: float
    seconds: float

    def key(self) -> tuple[float, ...]:
        return (self.score,)

    def line(self, score: str = "score") -> str:
        return f"epoch {self.epoch:3d}  loss {self.train_loss:.4f}  val score {self.score:.4f}"


@dataclass
class SceneResult:
    run_dir: Path
    task: str
    scores: object
    seconds: float
    history: list[SceneRecord] = field(default_factory=list)
    model: torch.nn.Module | None = None
    meta: BundleMeta | None = None


def scene_spec(cfg: RunConfig, task: str, data: SceneData) -> SceneSpec:
    recipe = RECIPES[task]
    size, arch = cfg.data.image_size or recipe.image_size, cfg.model.arch or recipe.arch
    backbone = "" if arch in HUB_DETECTORS else cfg.model.backbone  # a hub detector brings its own
    return SceneSpec(arch, backbone, len(data.classes), size, round(size * 5 / 3))


def resolved_config(cfg: RunConfig, task: str, spec: SceneSpec) -> RunConfig:
    """The values this run really uses (the recipe's epochs and LR for the 0 placeholders, the architecture and
    the size), as config.yaml records them."""
    r, t = RECIPES[task], cfg.train
    train = dataclasses.replace(t, epochs=t.epochs or r.epochs, lr=float(t.lr) or r.lr)
    return dataclasses.replace(cfg, train=train, data=dataclasses.replace(cfg.data, image_size=spec.min_size),
                               model=dataclasses.replace(cfg.model, arch=spec.arch))


def split_scene(data: SceneData, cfg: RunConfig) -> tuple[list, list]:
    train, val = split_indices(data.items, cfg.data.val_fraction, cfg.train.seed)
    if not train or not val:
        raise TunevisionError(f"{cfg.data.data}: {len(train)} training and {len(val)} validation images; both splits "
                              "need at least one usable annotated image")
    return [data.items[i] for i in train], [data.items[i] for i in val]


def train_scene_epoch(model: torch.nn.Module, task: str, samples: list[SceneSample], spec: SceneSpec,
                      opt: torch.optim.Optimizer, sched, batch: int, gen: torch.Generator) -> float:
    """One pass in shuffled batches; returns the mean loss. The whole step is here, top to bottom."""
    model.train()
    transform = detection_transform() if task == "detect" else segmentation_transform(spec.min_size)
    order, total = torch.randperm(len(samples), generator=gen).tolist(), 0.0
    # the last partial batch is dropped (the heads' BatchNorm wants several images), unless it is the only one
    for start in range(0, max(len(order) - len(order) % batch, 1), batch):
        chunk = [samples[i] for i in order[start: start + batch]]
        if task == "detect":
            images, targets = zip(*(detection_example(s, transform) for s in chunk))
            loss = sum(model(list(images), list(targets)).values())  # torchvision returns its loss terms
        else:
            images, masks = zip(*(segmentation_example(s, transform) for s in chunk))
            loss = torch.nn.functional.cross_entropy(model(torch.stack(images)), torch.stack(masks),
                                                     ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise TunevisionError(f"the loss became {loss.item()} (diverged); lower --lr (now "
                                  f"{sched.get_last_lr()[0]:.3g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 10.0)
        opt.step()
        sched.step()
        total += loss.item() * len(chunk)
    return total / max(1, len(samples))


def make_scene_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def scene_meta(cfg: RunConfig, task: str, spec: SceneSpec, data: SceneData, model: torch.nn.Module,
               train: list[SceneSample]) -> BundleMeta:
    mean, std = _model_stats(model)
    return BundleMeta(architecture=spec.arch, classes=data.classes, image_size=spec.min_size,
                      resize_size=spec.max_size, mean=mean, std=std, task=task,
                      preprocessing=f"resize the shorter side to {spec.min_size} (PIL bilinear; longer side at most "
                                    f"{spec.max_size} inside the detector), RGB /255; mean/std inside the model",
                      extra={"spec": dataclasses.asdict(spec), "data": str(Path(cfg.data.data).expanduser().resolve()),
                             "seed": cfg.train.seed, "val_fraction": cfg.data.val_fraction, "format": data.format,
                             "train_files": sorted(relative_names([s.source for s in train], cfg.data.data))})


def _model_stats(model: torch.nn.Module) -> tuple[list[float], list[float]]:
    if hasattr(model, "transform"):  # torchvision detectors normalise in their GeneralizedRCNNTransform
        return list(model.transform.image_mean), list(model.transform.image_std)
    return model.mean.flatten().tolist(), model.std.flatten().tolist()


# (the run's config, the folder to write in, the log): the data audit, which the task table hands in (it lives beside
# this package, in classify/)
Audit = Callable[[RunConfig, Path, RunLog], object]


def fit_scene(cfg: RunConfig, task: str, run_dir: Path, log: RunLog, resume: dict | None = None,
              audit: Audit | None = None) -> SceneResult:
    started = time.perf_counter()
    cfg = cfg.for_task(task)
    torch.manual_seed(cfg.train.seed)
    with log.stage("discovery"):
        data = read_scene_data(cfg.data.data, task=task)
    spec = scene_spec(cfg, task, data)
    if (task == "segment" or spec.arch.startswith("maskrcnn")) and not all(it.has_masks for it in data.items):
        raise TunevisionError(f"{cfg.data.data}: {'--task segment' if task == 'segment' else '--arch ' + spec.arch} "
                              f"needs masks ({data.format} data has boxes only, or outlines for some objects "
                              "alone); use --task detect with a box architecture, an images + masks folder, or "
                              "polygons (COCO segmentation, LabelMe, YOLO segment lines) for every object")
    cfg = resolved_config(cfg, task, spec)
    cfg.save(run_dir / "config.yaml")
    train, val = decode_split(data, cfg, task, spec, run_dir, log)
    if audit is not None and cfg.data.audit and not resume:  # duplicates, leakage into validation, odd images
        with log.stage("audit"), torch.random.fork_rng():  # the run draws what it would without the audit
            audit(cfg, run_dir / "audit", log)
    with log.stage("model"):
        model = create_scene_model(task, spec, cfg.model.pretrained and not resume, cfg.model.weights or None)
    if task == "detect":  # multi-scale training: in train mode torchvision's transform draws one shorter side per
        # image from min_size; in eval mode it takes the last, the bundle's own
        model.transform.min_size = tuple(range(round(spec.min_size * 0.7) // 32 * 32, spec.min_size, 32)) + (
            spec.min_size,)
    meta = scene_meta(cfg, task, spec, data, model, train)
    folder = RunFolder(run_dir, cfg, meta, log, resume)
    with log.stage("training"):
        history, evaluated = train_scene(model, task, train, val, spec, data.classes, cfg, folder, resume, log)
    model.load_state_dict(folder.best["state"])
    folder.close()
    return finish_scene_run(cfg, task, model, meta, data, (train, val), folder, history, log, started, evaluated)


def decode_split(data: SceneData, cfg: RunConfig, task: str, spec: SceneSpec, run_dir: Path, log: RunLog
                 ) -> tuple[list[SceneSample], list[SceneSample]]:
    """Both splits decoded once; an image whose file is unusable is left out with its boxes and listed."""
    train_items, val_items = split_scene(data, cfg)
    if cfg.data.fixes:  # after the split, which then stays the one a run without them draws
        train_items, val_items, fixed = drop_fixed_items(train_items, val_items, cfg.data.fixes, cfg.data.data)
        atomic_write(run_dir / "fixes.csv", lambda p: p.write_bytes(Path(fixed["file"]).read_bytes()))
        log.info(f"fixes from {fixed['file']}: {fixed['dropped']} image(s) dropped (copy in {run_dir / 'fixes.csv'})")
    with log.stage("decode"), log.progress(len(data.items), "decoding images") as advance:
        train, bad_train = decode_scenes(train_items, spec.min_size, cfg.data.workers, lambda: advance(1),
                                         cfg.data.max_pixels)
        val, bad_val = decode_scenes(val_items, spec.min_size, cfg.data.workers, lambda: advance(1),
                                     cfg.data.max_pixels)
    data.problems.extend(bad_train + bad_val)
    if not train or not val:
        raise TunevisionError(f"{cfg.data.data}: {len(train)} training and {len(val)} validation images decode; "
                              f"both splits need one (left out: {data.problems[0][0]}: {data.problems[0][1]})")
    describe_scene_data(data, cfg, task, run_dir, train, val, log)
    return train, val


def train_scene(model: torch.nn.Module, task: str, train: list[SceneSample], val: list[SceneSample],
                spec: SceneSpec, classes: list[str], cfg: RunConfig, folder: RunFolder, resume: dict | None,
                log: RunLog) -> tuple[list[SceneRecord], tuple | None]:
    """The epochs: train, score on validation, hand the record to the run folder. Returns the history and the best
    epoch's (scores, outputs) when this process computed them, so the report needs no second pass."""
    t = cfg.train
    opt = make_scene_optimizer(model, t)
    steps = t.epochs * max(1, len(train) // t.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, t.lr, total_steps=steps, pct_start=0.1)
    history, gen, evaluated = [], torch.Generator().manual_seed(t.seed), None
    if resume:
        model.load_state_dict(resume["model"]), opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"]), gen.set_state(resume["generator"])
        history = [SceneRecord(**r) for r in resume["history"]]
    size = sum(p.numel() for p in model.parameters()) / 1e6
    log.info(f"[bold]model[/] {' on '.join(filter(None, [spec.arch, spec.backbone]))} ({size:.1f} M parameters), "
             f"{task}, shorter side {spec.min_size}px, {t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr "
             f"{t.lr:g} weight decay {t.weight_decay:g}")
    with log.progress(t.epochs, "training") as advance:
        advance(len(history))
        for epoch in range(len(history) + 1, t.epochs + 1):
            tick = time.perf_counter()
            loss = train_scene_epoch(model, task, train, spec, opt, sched, t.batch_size, gen)
            scores, outputs = score_scenes(model, task, val, classes)
            history.append(SceneRecord(epoch, loss, primary(scores), getattr(scores, "map_50", None) or
                                       getattr(scores, "pixel_acc", 0.0), sched.get_last_lr()[0],
                                       time.perf_counter() - tick))
            stop = folder.on_epoch(history, model, lambda: {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "generator": gen.get_state(), "history": [dataclasses.asdict(r) for r in history]},
                line=f"epoch {epoch:3d}  loss {loss:.4f}  val {scores.headline()}")
            if folder.best["epoch"] == epoch:
                evaluated = scores, outputs
            advance(1)
            if stop:
                break
    return history, evaluated


def finish_scene_run(cfg: RunConfig, task: str, model, meta: BundleMeta, data: SceneData,
                     splits: tuple[list[SceneSample], list[SceneSample]], folder: RunFolder,
                     history: list[SceneRecord], log: RunLog, started: float, evaluated: tuple | None = None
                     ) -> SceneResult:
    """Final scores with curves (eval/), summary.json, the report; the bundle of the best epoch is on disk already
    (written when that epoch improved). `evaluated`: the best epoch's (scores, outputs) when this process computed
    them (not after a resume past the best epoch)."""
    (train, val), run_dir, best = splits, folder.path, folder.best
    with log.stage("evaluation"):
        scores, preds = evaluated or score_scenes(model, task, val, data.classes)
    (run_dir / "eval").mkdir(exist_ok=True)
    atomic_write(run_dir / "eval" / "metrics.json", lambda p: p.write_text(json.dumps(scores.to_dict(), indent=2)))
    seconds = time.perf_counter() - started
    summary = {"task": task, **{k: v for k, v in scores.to_dict().items() if not isinstance(v, dict)},
               "best_epoch": best["epoch"], "epochs_run": len(history), "seconds": round(seconds, 1),
               "arch": meta.architecture, "classes": data.classes, "train_images": len(train),
               "val_images": len(val),
               "skipped": len(data.problems), "bundle": str(run_dir / "model"), "command": " ".join(sys.argv)}
    folder.write_summary(summary)
    folder.finish(lambda: write_scene_report(run_dir, model, task, val, preds, scores, meta, history))
    seconds = time.perf_counter() - started
    folder.write_summary({**summary, "seconds": round(seconds, 1), "stages": log.stage_table(seconds)})
    log.describe_stages(seconds)
    log.info(f"[bold green]done[/] val {scores.headline()} (best epoch {best['epoch']}) in {seconds:.1f}s; "
             f"run folder {run_dir}; bundle {run_dir / 'model'}")
    return SceneResult(run_dir, task, scores, seconds, history, model, meta)


def describe_scene_data(data: SceneData, cfg: RunConfig, task: str, run_dir: Path, train: list[SceneSample],
                        val: list[SceneSample], log: RunLog) -> None:
    boxes = sum(len(it.boxes) for it in data.items)
    log.info(f"[bold]data[/] {cfg.data.data}: {data.format} annotations, task {task}; {len(data.classes)} "
             f"class{'es' if len(data.classes) > 1 else ''} ({', '.join(data.classes[:8])}), {len(train)} train / "
             f"{len(val)} val images, {boxes} boxes, {len(data.problems)} left out")
    for source, reason in data.problems[:20]:
        log.info(f"  left out {source}: {reason}")
    if len(data.problems) > 20:
        log.info(f"  ... and {len(data.problems) - 20} more, all listed in {run_dir / 'skipped.csv'}")
    write_csv(run_dir / "skipped.csv", ["path", "reason"], data.problems)
    write_csv(run_dir / "split.csv", ["path", "boxes", "split"],
              [(s.source, len(s.boxes), split) for split, samples in (("train", train), ("val", val)) for s in samples])


def run_scene(cfg: RunConfig, task: str, log: RunLog, resume_dir: Path | None = None, audit: Audit | None = None
              ) -> SceneResult:
    """`fit_scene` in its run folder: made here, removed if the run fails before its first epoch; Ctrl-C or
    SIGTERM leave the checkpoint of the last finished epoch for `tunevision train --resume`."""
    cfg, run_dir, resume = open_run(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task=task)),
                                    resume_dir, task)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.log_file = run_dir / "train.log"
    with guarded_run(run_dir, created, log):
        return fit_scene(cfg, task, run_dir, log, resume, audit)


def rewrite_scene_report(run_dir: Path) -> Path:
    """report.html again for a finished detection/segmentation run, from its bundle and its held-out split."""
    model, meta = load_scene_bundle(run_dir)
    items, classes = evaluation_items(meta, meta.extra["data"])
    val, _ = decode_scenes(items, meta.image_size)
    scores, outputs = score_scenes(model, meta.task, val, classes)
    return write_scene_report(run_dir, model, meta.task, val, outputs, scores, meta, read_metrics(run_dir, SceneRecord))
