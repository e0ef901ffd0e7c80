"""The learning-rate range test (Smith 2015; fastai's lr_find): raise the LR exponentially over a few
hundred steps, watch the loss, suggest the LR where it falls fastest. The model is restored afterwards."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig
from .models import Classifier
from .runtime import Runtime


def lr_range_test(model: Classifier, images: np.ndarray, labels: torch.Tensor, pipeline, rt: Runtime,
                  cfg: RunConfig, *, start: float = 1e-7, end: float = 1.0, steps: int = 100,
                  gen: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(body learning rates, smoothed losses); stops early once the loss diverges (> 4x its minimum)."""
    from .train import epoch_order, make_optimizer
    gen = gen or torch.Generator().manual_seed(cfg.train.seed)
    saved = copy.deepcopy(model.state_dict())
    opt = make_optimizer(model, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=start)))
    scale = [g["lr"] / start for g in opt.param_groups]  # 1 for the body, head_lr_mult for the head
    factor = (end / start) ** (1 / max(steps - 1, 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if len(order) < 2:
            order = epoch_order(labels, cfg.train.balance, gen)
        idx, order = order[:cfg.train.batch_size].sort().values, order[cfg.train.batch_size:]
        lr = start * factor ** step
        for group, s in zip(opt.param_groups, scale):
            group["lr"] = lr * s
        x = pipeline(torch.from_numpy(images[idx.numpy()]), gen).to(rt.device)
        with rt.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[idx].to(rt.device), label_smoothing=cfg.train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg = 0.9 * avg + 0.1 * loss.item()          # exponential smoothing, debiased below
        smoothed = avg / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > 4 * best:
            break
    model.load_state_dict(saved)
    return np.array(lrs), np.array(losses)


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR of steepest descent of the loss (in log LR), looking only before the loss minimum."""
    stop = int(np.argmin(losses)) + 1
    if stop < 3:
        return float(lrs[0])
    slope = np.gradient(losses[:stop], np.log(lrs[:stop]))
    return float(lrs[int(np.argmin(slope))])


def plot_lr_find(lrs: np.ndarray, losses: np.ndarray, suggestion: float, path) -> None:
    from .plots import _figure, _save
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggestion {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (body; head x head_lr_mult)")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    _save(fig, path)
