"""`fit`: data -> model -> training loop -> bundle, readable top to bottom.

Two loops share one run folder layout:
  * head on cached features (modes freeze and auto): the backbone runs once per image view, then
    the linear head trains on the stored features for many epochs at almost no cost;
  * whole network (modes finetune and scratch): augmented uint8 batches, AdamW/SGD, one-cycle,
    bf16 autocast, a best-by-validation bundle and an atomic checkpoint every epoch (--resume).
"""
from __future__ import annotations

import copy
import dataclasses
import csv
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import augment as aug
from .bundle import BundleMeta, bundle_dir, load_bundle, save_bundle
from .calibrate import expected_calibration_error, fit_temperature
from .config import RunConfig
from .data import Dataset, Sample, cache_key, channel_stats, discover, drop_skipped, load_images
from .errors import TunevisionError
from .evaluate import Evaluation, per_class_metrics, predict_probs
from .features import cached_features, extract_features
from .models import Backbone, Classifier, body_stages, build_classifier, count_parameters, create_backbone
from .runtime import INFERENCE_PRECISION, Runtime, compiled_for_training, resolve_runtime
from .ui import RunLog

HEAD_BATCH = 256  # features are cheap: big batches mean few optimizer steps per epoch
# In auto mode, augmented feature views stop at this many images: on hymenoptera (245 train images) three
# views gave +0.7 points, on flowers5 (3,453) none measurable, while each view of 3,453 costs ~45 s on 2 cores.
AUTO_VIEW_BUDGET = 4000


def default_image_size(backbone: Backbone, mode: str) -> int:
    """Frozen features are taken at 8/7 of the pretraining size (FixRes: RandomResizedCrop pretraining shows
    objects larger than a same-size centre crop does). Measured with Lite0: hymenoptera 94.8 -> 96.1 %,
    flowers5 75.1 -> 76.5 % (no views). Fine-tuning trains at the backbone's own size."""
    if mode in ("auto", "freeze") and backbone.crop_pct < 1:
        return int(round(backbone.input_size * 8 / 7 / 32) * 32)
    return backbone.input_size


@dataclass
class Data:
    dataset: Dataset
    train: list[Sample]
    val: list[Sample]
    train_images: np.ndarray  # (N, resize, resize, 3) uint8, possibly memory-mapped
    val_images: np.ndarray
    image_size: int
    resize_size: int
    key: str = ""             # identifies the decoded images, for the feature cache

    @property
    def train_labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.train], dtype=torch.long)

    @property
    def val_labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.val], dtype=torch.long)


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


@dataclass
class FitResult:
    run_dir: Path
    best_acc: float
    best_epoch: int
    seconds: float
    history: list[EpochRecord] = field(default_factory=list)
    evaluation: Evaluation | None = None


def cache_dir(cfg: RunConfig) -> Path | None:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None


def prepare_data(cfg: RunConfig, backbone: Backbone, log: RunLog) -> Data:
    """Discover, decode once (cached), drop and report unusable files, refuse untrainable datasets."""
    ds = discover(cfg.data.data, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed)
    image_size = cfg.data.image_size or default_image_size(backbone, cfg.train.mode)
    resize = max(image_size, round(image_size / backbone.crop_pct))
    kw = dict(cache_dir=cache_dir(cfg), arrays=ds.arrays, max_pixels=cfg.data.max_pixels,
              workers=cfg.data.workers or None)
    with log.progress(len(ds.train) + len(ds.val), "decoding images") as advance:
        train_images, bad_train = load_images(ds.train, resize, progress=advance, **kw)
        val_images, bad_val = load_images(ds.val, resize, progress=advance, **kw)
    ds.skipped += bad_train + bad_val
    train, val = drop_skipped(ds.train, bad_train), drop_skipped(ds.val, bad_val)
    present = sorted({ds.classes[s.label] for s in train})
    if len(present) < 2:
        raise TunevisionError(f"{cfg.data.data}: {len(present)} class(es) with usable training images "
                              f"({', '.join(present) or 'none'}); a classifier needs at least 2 class folders")
    if not val:
        raise TunevisionError(f"{cfg.data.data}: the validation split is empty; add images to val/ or "
                              "give each class at least 2 images for the automatic split")
    key = cache_key(train + val, resize, ds.arrays)
    return Data(ds, train, val, train_images, val_images, image_size, resize, key)


def new_run_dir(cfg: RunConfig) -> Path:
    root = Path(cfg.out)
    if cfg.name:
        return root / cfg.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.data.data.rstrip("/").split(":")[-1]).name or "data")
    n = 1
    while (root / f"{stem}-{cfg.train.mode}-{n}").exists():
        n += 1
    return root / f"{stem}-{cfg.train.mode}-{n}"


def write_dataset_files(run_dir: Path, data: Data) -> None:
    ds = data.dataset
    (run_dir / "dataset.json").write_text(json.dumps({
        "source": ds.layout, "classes": ds.classes, "counts": {
            "train": {c: sum(s.label == i for s in data.train) for i, c in enumerate(ds.classes)},
            "val": {c: sum(s.label == i for s in data.val) for i, c in enumerate(ds.classes)}},
        "skipped": len(ds.skipped), "image_size": data.image_size, "resize_size": data.resize_size}, indent=2))
    with open(run_dir / "skipped.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows([(s.path, s.reason) for s in ds.skipped])
    with open(run_dir / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows([(s.path, ds.classes[s.label], split) for split, ss in (("train", data.train), ("val", data.val))
                     for s in ss])


def write_metrics(run_dir: Path, history: list[EpochRecord]) -> None:
    tmp = run_dir / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(EpochRecord.__dataclass_fields__))
        for r in history:
            w.writerow([r.epoch, f"{r.train_loss:.5f}", f"{r.train_acc:.5f}", f"{r.val_loss:.5f}",
                        f"{r.val_acc:.5f}", f"{r.lr:.3g}", f"{r.seconds:.2f}", f"{r.ema_val_acc:.5f}"])
    os.replace(tmp, run_dir / "metrics.csv")


def make_optimizer(model: Classifier, cfg: RunConfig) -> torch.optim.Optimizer:
    """Discriminative LRs: the new head at lr x head_lr_mult, the body at lr, or with layer_decay one group per
    stage, the k-th below the top at lr x decay^k. Frozen parameters are included (they get no gradient, so
    the optimizer skips them) because gradual unfreezing thaws them later."""
    t = cfg.train
    lr = t.resolved_lr()
    stages = body_stages(model.body) if t.layer_decay else []
    staged = {id(p) for stage in stages for m in stage for p in m.parameters()}
    groups = [{"params": [p for m in stage for p in m.parameters()], "lr": lr * t.layer_decay ** (len(stages) - 1 - i)}
              for i, stage in enumerate(stages)]
    rest = [p for p in model.body.parameters() if id(p) not in staged]
    if rest:
        groups.append({"params": rest, "lr": lr})
    groups.append({"params": list(model.head.parameters()), "lr": lr * t.head_lr_mult})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=t.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=t.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    total_steps = max(1, total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total_steps, pct_start=0.25)
    warmup = max(1, total_steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                                 max(1, total_steps - warmup))))


def epoch_order(labels: torch.Tensor, balance: str, gen: torch.Generator) -> torch.Tensor:
    """One epoch of indices: a permutation, or with balance='sampler' as many draws, each class equally likely."""
    if balance != "sampler":
        return torch.randperm(len(labels), generator=gen)
    per_image = 1.0 / torch.bincount(labels)[labels].double()
    return torch.multinomial(per_image, len(labels), replacement=True, generator=gen)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (C * n_c): each class contributes equally to the loss (sklearn's 'balanced'); absent classes get 0."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros(()))


def loss_weights(cfg: RunConfig, labels: torch.Tensor, num_classes: int, device: torch.device) -> torch.Tensor | None:
    return class_weights(labels, num_classes).to(device) if cfg.train.balance == "weights" else None


def train_one_epoch(model: Classifier, images: np.ndarray, labels: torch.Tensor, pipeline, opt, sched,
                    rt: Runtime, cfg: RunConfig, gen: torch.Generator, advance, ema=None,
                    frozen: Sequence[nn.Module] = ()) -> tuple[float, float]:
    model.train()
    for m in frozen:  # frozen stages keep their BatchNorm statistics too
        m.eval()
    total_loss, correct, seen = 0.0, 0, 0
    weight = loss_weights(cfg, labels, model.head.out_features, rt.device)
    for idx in epoch_order(labels, cfg.train.balance, gen).split(cfg.train.batch_size):
        if len(idx) < 2:  # BatchNorm cannot train on a batch of one
            continue
        idx = idx.sort().values  # read the memory-mapped cache in file order
        x = pipeline(torch.from_numpy(images[idx.numpy()]), gen).to(rt.device, non_blocking=True)
        y = labels[idx].to(rt.device)
        target = y
        if cfg.train.mixup or cfg.train.cutmix:
            x, target = aug.mix_batch(x, y, model.head.out_features, cfg.train.mixup, cfg.train.cutmix, gen)
        with rt.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=cfg.train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(idx)
        advance(len(idx))
    return total_loss / max(seen, 1), correct / max(seen, 1)


def val_metrics(probs: np.ndarray, labels: torch.Tensor) -> tuple[float, float]:
    y = labels.numpy()
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    return loss, float((probs.argmax(1) == y).mean())


def _initial_model(cfg: RunConfig) -> tuple[str, Backbone, Classifier | None]:
    """(architecture, backbone, previous model). A bundle or run folder passed as --weights continues that
    run's network, whatever --backbone says; its head is reused when the classes match."""
    weights = cfg.model.weights
    if weights and cfg.train.mode != "scratch":
        try:
            folder = bundle_dir(weights)
        except TunevisionError:
            folder = None  # not a bundle: a plain state dict file, loaded below
        if folder is not None:
            prev, meta = load_bundle(folder)
            backbone = create_backbone(meta.architecture, pretrained=False)
            backbone.body, backbone.mean, backbone.std = prev.body, tuple(meta.mean), tuple(meta.std)
            return meta.architecture, backbone, prev
    pretrained = cfg.model.pretrained and cfg.train.mode != "scratch"
    weights = (weights or None) if cfg.train.mode != "scratch" else None
    return cfg.model.backbone, create_backbone(cfg.model.backbone, pretrained=pretrained, weights=weights), None


def _body_fingerprint(model: Classifier) -> str:
    h = hashlib.sha1()
    for k, v in model.body.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if v.numel() else b"")
    return h.hexdigest()


def fit_head(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog,
             on_epoch) -> list[EpochRecord]:
    """Frozen backbone: features for the eval view and `views` augmented views, once; then the head only."""
    t = cfg.train
    model.body.requires_grad_(False).eval()  # BatchNorm statistics stay those of pretraining
    fingerprint = _body_fingerprint(model)
    train_view = aug.make_pipeline(t.augment, data.image_size)
    views = t.views if t.mode == "freeze" else min(t.views, AUTO_VIEW_BUDGET // len(data.train))
    n_views = 1 + views
    base = [fingerprint, data.key, str(data.image_size), str(rt.bf16)]

    def compute(images: np.ndarray, view, advance) -> torch.Tensor:
        return extract_features(model, images, view, rt, progress=advance)

    total = len(data.val) + len(data.train) * n_views
    with log.progress(total, f"features ({n_views} train views + val)") as advance:
        val_f = cached_features(cache_dir(cfg), base + ["val", "eval"], lambda: compute(
            data.val_images, lambda b: aug.eval_view(b, data.image_size), advance))
        train_f = [cached_features(cache_dir(cfg), base + ["train", "eval"], lambda: compute(
            data.train_images, lambda b: aug.eval_view(b, data.image_size), advance))]
        for v in range(views):
            gen = torch.Generator().manual_seed(t.seed * 1000 + v)
            train_f.append(cached_features(cache_dir(cfg), base + ["train", t.augment, str(t.seed), str(v)],
                                           lambda: compute(data.train_images, lambda b: train_view(b, gen), advance)))
    x = torch.cat(train_f).to(rt.device)
    y = data.train_labels.repeat(n_views).to(rt.device)
    val_x, val_y = val_f.to(rt.device), data.val_labels
    epochs = t.resolved_epochs()
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, t.schedule, epochs * math.ceil(len(x) / HEAD_BATCH))
    gen = torch.Generator().manual_seed(t.seed)
    weight = loss_weights(cfg, y, model.head.out_features, rt.device)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.head.train()
        total, correct = 0.0, 0
        for idx in epoch_order(y.cpu(), t.balance, gen).split(HEAD_BATCH):
            logits = model.forward_head(x[idx])
            loss = F.cross_entropy(logits, y[idx], weight=weight, label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        model.head.eval()
        with torch.no_grad():
            probs = torch.softmax(model.forward_head(val_x), 1).cpu().numpy()
        val_loss, val_acc = val_metrics(probs, val_y)
        history.append(EpochRecord(epoch, total / len(x), correct / len(x), val_loss, val_acc,
                                   opt.param_groups[-1]["lr"], time.perf_counter() - start))
        if on_epoch(history, model, None):
            break
    return history


def size_for_epoch(epoch: int, epochs: int, sizes: list[int], default: int) -> int:
    """Progressive resizing: epoch 1..epochs split into len(sizes) equal stages (fastai's, smallest first)."""
    if not sizes:
        return default
    return sizes[min(len(sizes) - 1, (epoch - 1) * len(sizes) // max(epochs, 1))]


def trainable_stages(epoch: int, epochs: int, n: int, unfreeze: str) -> int:
    """Gradual unfreezing (ULMFiT's, by stage): how many body stages, counted from the top, train in `epoch`;
    the count grows linearly so that every stage trains from the middle epoch on."""
    if unfreeze != "gradual":
        return n
    return min(n, math.ceil(n * epoch / max(1, math.ceil(epochs / 2))))


def freeze_stages(stages: list[list[nn.Module]], trainable: int) -> list[nn.Module]:
    """Freeze all but the top `trainable` stages; returns the frozen modules. Besides the recipe, this saves
    the backward pass through the frozen (early, high-resolution, most expensive) stages."""
    cut = len(stages) - trainable
    for i, stage in enumerate(stages):
        for m in stage:
            m.requires_grad_(i >= cut)
    return [m for stage in stages[:cut] for m in stage]


def warm_head(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog) -> None:
    """fastai's fine_tune recipe, first half: the new head learns on the frozen body before anything else
    moves, so the whole-network phase does not start by pushing a random head's gradients into pretrained
    weights. Done on cached features (no augmented views), it costs one forward pass over the images."""
    head_train = dataclasses.replace(cfg.train, mode="freeze", epochs=cfg.train.freeze_epochs, lr=0.0, views=0,
                                     early_stopping=0)
    history = fit_head(model, data, dataclasses.replace(cfg, train=head_train), rt, log, lambda *_: False)
    model.body.requires_grad_(True)
    log.info(f"head warm-up ({len(history)} epochs on frozen features): val acc {history[-1].val_acc:.4f}")


def fit_network(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, on_epoch,
                resume: dict | None) -> list[EpochRecord]:
    """The whole network trains; a checkpoint after every epoch makes a killed run resumable."""
    t = cfg.train
    pipelines: dict[int, object] = {}  # one compiled augmentation pipeline per training size
    epochs = t.resolved_epochs()
    opt = make_optimizer(model, cfg)
    steps_per_epoch = sum(1 for i in range(0, len(data.train), t.batch_size) if len(data.train) - i >= 2)
    sched = make_scheduler(opt, t.schedule, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(t.seed)
    history: list[EpochRecord] = []
    ema = None
    if t.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
    if resume:
        if ema is not None and resume.get("ema"):
            ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history = [EpochRecord(**r) for r in resume["history"]]
    labels = data.train_labels
    stages = body_stages(model.body)
    trained = model  # what runs the training steps: the model itself, or its compiled wrapper
    if t.compile:
        example = aug.eval_view(torch.from_numpy(np.array(data.train_images[:t.batch_size])), data.image_size)
        trained = compiled_for_training(model, example.to(rt.device).contiguous(memory_format=torch.channels_last),
                                        log)
    for epoch in range(len(history) + 1, epochs + 1):
        start = time.perf_counter()
        frozen = freeze_stages(stages, trainable_stages(epoch, epochs, len(stages), t.unfreeze))
        size = size_for_epoch(epoch, epochs, t.size_schedule(), data.image_size)
        if size not in pipelines:  # compile (and dry-run) each size's pipeline once, not every epoch
            pipelines[size] = aug.make_pipeline(t.augment, size)
        pipeline = pipelines[size]
        with log.progress(len(labels), f"epoch {epoch}/{epochs} ({size}px)") as advance:
            train_loss, train_acc = train_one_epoch(trained, data.train_images, labels, pipeline, opt, sched,
                                                    rt, cfg, gen, advance, ema, frozen)
        probs = predict_probs(model, data.val_images, rt, data.image_size)
        val_loss, val_acc = val_metrics(probs, data.val_labels)
        candidate, ema_acc = model, math.nan
        if ema is not None:  # the better of raw and averaged weights competes for "best"
            ema_loss, ema_acc = val_metrics(predict_probs(ema.module, data.val_images, rt, data.image_size),
                                            data.val_labels)
            if (ema_acc, -ema_loss) > (val_acc, -val_loss):
                candidate, val_loss, val_acc = ema.module, ema_loss, ema_acc
        history.append(EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, opt.param_groups[-1]["lr"],
                                   time.perf_counter() - start, ema_acc))
        stop = on_epoch(history, candidate, lambda: {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "ema": ema.state_dict() if ema is not None else None,
            "history": [r.__dict__ for r in history]})
        if stop:
            break
    return history


def calibrate_and_evaluate(model: Classifier, meta: BundleMeta, data: Data, cfg: RunConfig, run_dir: Path
                           ) -> tuple[Evaluation, tuple[float, float]]:
    """Fit the temperature on validation logits, save the final bundle, write eval/; returns ECE before/after."""
    # The final numbers come from the same precision that predict, serve and exports use.
    raw = predict_probs(model, data.val_images, resolve_runtime(cfg.train.device, INFERENCE_PRECISION),
                        data.image_size)
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


def run_lr_range_test(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, plot_path: Path,
                      steps: int = 100) -> float:
    from .lr_find import lr_range_test, plot_lr_find, suggest_lr
    pipeline = aug.make_pipeline(cfg.train.augment, data.image_size)
    lrs, losses = lr_range_test(model, data.train_images, data.train_labels, pipeline, rt, cfg, steps=steps)
    suggestion = suggest_lr(lrs, losses)
    plot_lr_find(lrs, losses, suggestion, plot_path)
    return suggestion


def find_lr(cfg: RunConfig, *, steps: int = 100, log: RunLog | None = None) -> tuple[float, Path]:
    """`tunevision lr-find`: the range test alone, its plot written to the current folder."""
    log = log or RunLog()
    torch.manual_seed(cfg.train.seed)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision, training=True)
    _, backbone, _ = _initial_model(cfg)
    data = prepare_data(cfg, backbone, log)
    if cfg.model.normalize == "data":
        backbone.mean, backbone.std = channel_stats(data.train_images)
    model = build_classifier(backbone, len(data.dataset.classes), cfg.model.dropout)
    model = model.to(rt.device).to(memory_format=torch.channels_last)
    path = Path("lr_find.png")
    return run_lr_range_test(model, data, cfg, rt, path, steps), path


def fit(cfg: RunConfig, *, log: RunLog | None = None, resume_dir: Path | None = None) -> FitResult:
    """Train per `cfg`, writing everything into a run folder; returns where and how well."""
    started = time.perf_counter()
    aug.make_pipeline(cfg.train.augment, 32)  # a bad spec fails now: before decoding, and before any run folder
    resume = None
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        cfg = RunConfig.load(run_dir / "config.yaml")
        if (run_dir / "checkpoint.pt").is_file():
            resume = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    else:
        run_dir = new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or RunLog()
    log.log_file = run_dir / "train.log"
    cfg.save(run_dir / "config.yaml")
    torch.manual_seed(cfg.train.seed)
    # head modes run the backbone only for inference (feature extraction); the others train it
    rt = resolve_runtime(cfg.train.device, cfg.train.precision, training=cfg.train.mode in ("finetune", "scratch"))

    architecture, backbone, previous = _initial_model(cfg)
    data = prepare_data(cfg, backbone, log)
    ds = data.dataset
    write_dataset_files(run_dir, data)
    log.info(f"[bold]data[/] {cfg.data.data}: {ds.layout}; {len(ds.classes)} classes, "
             f"{len(data.train)} train / {len(data.val)} val images, {len(ds.skipped)} skipped")
    for s in ds.skipped[:20]:
        log.info(f"  skipped {s.path}: {s.reason}")
    if len(ds.skipped) > 20:
        log.info(f"  ... and {len(ds.skipped) - 20} more, all listed in {run_dir / 'skipped.csv'}")

    if cfg.model.normalize == "data":
        backbone.mean, backbone.std = channel_stats(data.train_images)
        log.info(f"normalisation from the training images: mean {backbone.mean}, std {backbone.std}")
    model = build_classifier(backbone, len(ds.classes), cfg.model.dropout)
    if previous is not None and previous.head.out_features == len(ds.classes):
        model.head.load_state_dict(previous.head.state_dict())
    if resume:
        model.load_state_dict(resume["model"])
    model = model.to(rt.device).to(memory_format=torch.channels_last)
    meta = BundleMeta(architecture=architecture, classes=ds.classes, image_size=data.image_size,
                      resize_size=data.resize_size, mean=list(backbone.mean), std=list(backbone.std),
                      dropout=cfg.model.dropout, mode=cfg.train.mode)
    total, _ = count_parameters(model)
    log.info(f"[bold]model[/] {architecture} ({total / 1e6:.1f} M parameters), mode {cfg.train.mode}, "
             f"{data.image_size}px, {rt.device}{' bf16' if rt.bf16 else ''}")

    best = {"acc": -1.0, "loss": math.inf, "epoch": 0, "state": None}
    if resume:
        best.update(acc=resume["best_acc"], loss=resume.get("best_loss", math.inf), epoch=resume["best_epoch"])
        best["state"] = resume.get("best_state")
    patience = cfg.train.early_stopping
    writer = None
    if cfg.train.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TunevisionError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        writer = SummaryWriter(str(run_dir / "tensorboard"))

    def on_epoch(history: list[EpochRecord], model: Classifier, checkpoint) -> bool:
        """Log, keep the best weights (accuracy, then loss), write metrics/bundle/checkpoint; True = stop."""
        r = history[-1]
        improved = r.val_acc > best["acc"] or (r.val_acc == best["acc"] and r.val_loss < best["loss"])
        if improved:
            best.update(acc=r.val_acc, loss=r.val_loss, epoch=r.epoch,
                        state=copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}))
        if checkpoint is not None or improved or r.epoch == cfg.train.resolved_epochs():
            log.info(f"epoch {r.epoch:3d}  train loss {r.train_loss:.4f} acc {r.train_acc:.3f}  "
                     f"val loss {r.val_loss:.4f} acc {r.val_acc:.4f}{'  *' if improved else ''}  {r.seconds:.1f}s")
        write_metrics(run_dir, history)
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                writer.add_scalar(key, getattr(r, key), r.epoch)
            writer.flush()
        if checkpoint is not None:
            if improved:
                save_bundle(model, meta, run_dir / "model")
            state = checkpoint()
            state.update(best_acc=best["acc"], best_loss=best["loss"], best_epoch=best["epoch"],
                         best_state=best["state"])
            tmp = run_dir / ".checkpoint.pt.tmp"
            torch.save(state, tmp)
            os.replace(tmp, run_dir / "checkpoint.pt")
        return bool(patience) and r.epoch - best["epoch"] >= patience

    if cfg.train.lr == "auto":
        suggestion = run_lr_range_test(model, data, cfg, rt, run_dir / "lr_find.png")
        cfg.train.lr = suggestion
        cfg.save(run_dir / "config.yaml")  # the run records the learning rate it actually used
        log.info(f"LR range test: body learning rate {suggestion:.2e} (plot {run_dir / 'lr_find.png'})")

    if cfg.train.mode in ("freeze", "auto"):
        history = fit_head(model, data, cfg, rt, log, on_epoch)
    else:
        if cfg.train.freeze_epochs and cfg.train.mode == "finetune" and not resume:
            warm_head(model, data, cfg, rt, log)
        history = fit_network(model, data, cfg, rt, log, on_epoch, resume)

    if writer is not None:
        writer.close()
    model.load_state_dict(best["state"])
    evaluation, ece = calibrate_and_evaluate(model, meta, data, cfg, run_dir)
    seconds = time.perf_counter() - started
    summary = {"best_val_acc": best["acc"], "best_epoch": best["epoch"], "epochs_run": len(history),
               "final_val_acc": evaluation.accuracy, "seconds": round(seconds, 2), "bundle": str(run_dir / "model"),
               "classes": ds.classes, "train_images": len(data.train), "val_images": len(data.val),
               "skipped": len(ds.skipped), "mode": cfg.train.mode, "backbone": architecture,
               "command": " ".join(sys.argv), "temperature": round(meta.temperature, 4), "ece_before": round(ece[0], 4),
               "ece_after": round(ece[1], 4)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    m = per_class_metrics(evaluation.confusion)
    for i, c in enumerate(ds.classes):
        log.info(f"  {c:>20s}  precision {m['precision'][i]:.3f}  recall {m['recall'][i]:.3f}  "
                 f"f1 {m['f1'][i]:.3f}  n={int(m['support'][i])}")
    try:
        from .report import write_report
        log.info(f"report {write_report(run_dir)}")
    except Exception as e:  # the bundle and metrics are already saved; a plotting problem must not lose them
        log.info(f"[yellow]report not written ({type(e).__name__}: {e}); retry with tunevision report {run_dir}[/]")
    log.info(f"calibration: temperature {meta.temperature:.2f}, expected calibration error "
             f"{ece[0]:.3f} -> {ece[1]:.3f}")
    log.info(f"[bold green]done[/] val accuracy {evaluation.accuracy:.2%} (best epoch {best['epoch']}) in {seconds:.1f}s; "
             f"run folder {run_dir}; bundle {run_dir / 'model'}")
    return FitResult(run_dir, best["acc"], best["epoch"], seconds, history, evaluation)


def compare_modes(cfg: RunConfig, modes: list[str], *, log: RunLog | None = None
                  ) -> list[tuple[str, int, FitResult]]:
    """Train once per mode on the same data and split: (mode, epochs, result) each. Whole-network modes share one
    epoch count (the configured one, else fine-tuning's default) so that only the initialisation differs;
    head modes keep theirs, since their epochs are passes over cached features. Writes compare.json."""
    shared = cfg.train.epochs or dataclasses.replace(cfg.train, mode="finetune").resolved_epochs()
    rows = []
    for mode in modes:
        epochs = shared if mode in ("finetune", "scratch") else cfg.train.epochs
        run = dataclasses.replace(cfg, name=f"{cfg.name}-{mode}" if cfg.name else "",
                                  train=dataclasses.replace(cfg.train, mode=mode, epochs=epochs))
        result = fit(run, log=log)
        rows.append((mode, run.train.resolved_epochs(), result))
    summary = [{"mode": m, "epochs": e, "best_val_acc": r.best_acc, "final_val_acc": r.evaluation.accuracy,
                "seconds": round(r.seconds, 1), "run_dir": str(r.run_dir)} for m, e, r in rows]
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "compare.json").write_text(json.dumps(summary, indent=2))
    return rows
