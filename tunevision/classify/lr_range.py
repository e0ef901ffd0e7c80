"""The learning-rate range test (Smith 2015; fastai's lr_find): raise the LR exponentially over a few
hundred steps, watch the loss, suggest the LR where it falls fastest. The model is restored afterwards."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from tunevision.classify.initial import initial_model
from tunevision.classify.prepare import prepare_data
from tunevision.core.config import RunConfig
from tunevision.core.output import check_run_outputs
from tunevision.core.runtime import Runtime, resolve_runtime
from tunevision.core.ui import RunLog
from tunevision.data.augment import make_pipeline
from tunevision.engine.optim import (
    epoch_order,
    loss_weights,
    make_optimizer,
    train_step,
)
from tunevision.models.backbones import Classifier, build_classifier, training_mode
from tunevision.report.plots import new_figure, save_figure


def lr_range_test(model: Classifier, images: np.ndarray, labels: torch.Tensor, pipeline, rt: Runtime,
                  cfg: RunConfig, *, start: float = 1e-7, end: float = 1.0, steps: int = 100,
                  gen: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(body learning rates, smoothed losses); stops early once the loss diverges (> 4x its minimum). Each step is
    training's own `train_step` (class weights, mixup, label smoothing), so the curve is of the loss training sees."""
    t = cfg.train
    gen = gen or torch.Generator().manual_seed(t.seed)
    saved = copy.deepcopy(model.state_dict())
    opt = make_optimizer(model, t, lr=start)
    scale = [g["lr"] / start for g in opt.param_groups]  # 1 for the body, head_lr_mult for the head
    factor = (end / start) ** (1 / max(steps - 1, 1))
    weight = loss_weights(t, labels, model.head.out_features, rt.device)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    training_mode(model, cfg.batchnorm_trains)
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if len(order) < 2:
            order = epoch_order(labels, t.balance, gen)
        idx, order = order[:t.batch_size].sort().values, order[t.batch_size:]
        lr = start * factor ** step
        for group, s in zip(opt.param_groups, scale):
            group["lr"] = lr * s
        x = pipeline(torch.from_numpy(images[idx.numpy()]), gen).to(rt.device)
        loss, _ = train_step(model, x, labels[idx].to(rt.device), opt, t, gen, num_classes=model.head.out_features,
                             weight=weight, autocast=rt.autocast)
        avg = 0.9 * avg + 0.1 * loss.item()          # exponential smoothing, debiased below
        smoothed = avg / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > 4 * best:
            break
    model.load_state_dict(saved)
    return np.array(lrs), np.array(losses)


def run_lr_range_test(model: Classifier, data, cfg: RunConfig, rt: Runtime, plot_path: Path | None,
                      steps: int = 100) -> tuple[float, np.ndarray, np.ndarray]:
    """The range test on a run's prepared data, its plot saved to `plot_path`: (suggestion, lrs, losses)."""
    pipeline = make_pipeline(cfg.train.augment, data.image_size)
    lrs, losses = lr_range_test(model, data.train_images, data.train_labels, pipeline, rt, cfg, steps=steps)
    suggestion = suggest_lr(lrs, losses)
    if plot_path is not None:
        plot_lr_find(lrs, losses, suggestion, plot_path)
    return suggestion, lrs, losses


def find_lr(cfg: RunConfig, *, steps: int = 100, log=None, plot_path: Path | None = None):
    """`tunevision lr-find` / `tunevision.lr_find`: the range test alone. Returns (suggestion, lrs, losses)."""
    cfg = cfg.for_task("classify")
    check_run_outputs(None, cfg.data.cache_dir)
    log = log or RunLog()
    torch.manual_seed(cfg.train.seed)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision, training=True)
    _, backbone, _ = initial_model(cfg)
    data = prepare_data(cfg, backbone, log)
    model = build_classifier(backbone, len(data.dataset.classes), cfg.model.dropout)
    model = model.to(rt.device).to(memory_format=torch.channels_last)
    return run_lr_range_test(model, data, cfg, rt, plot_path, steps)


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR of steepest descent of the loss (in log LR), looking only before the loss minimum."""
    stop = int(np.argmin(losses)) + 1
    if stop < 3:
        return float(lrs[0])
    slope = np.gradient(losses[:stop], np.log(lrs[:stop]))
    return float(lrs[int(np.argmin(slope))])


def plot_lr_find(lrs: np.ndarray, losses: np.ndarray, suggestion: float, path=None):
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggestion {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (body; head x head_lr_mult)")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    return save_figure(fig, path)
