"""Optimiser, schedule, sampling, and the one training step that every loop (and the LR range test) runs."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from tunevision.core.config import TrainConfig, for_task
from tunevision.data import augment as aug
from tunevision.engine.objective import objective_for
from tunevision.models.backbones import Classifier, body_stages


def make_optimizer(model: Classifier, t: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """Discriminative LRs: the new head at lr x head_lr_mult, the body at lr, or with layer_decay one group per
    stage, the k-th below the top at lr x decay^k. Frozen parameters are included (they get no gradient, so
    the optimizer skips them) because gradual unfreezing thaws them later."""
    t = for_task(t, "classify")  # a config made by hand may still hold the 'auto' placeholders
    lr = t.resolved_lr() if lr is None else lr
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
    # one-cycle's warm-up phase must span at least one step: with fewer than 5 steps in all (a tiny set, or its
    # share per process under torchrun) PyTorch divides by zero
    total_steps = max(5 if schedule == "onecycle" else 1, total_steps)
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
    """The objective's balancing weights: per class (single-label) or per label's positives (multi-label)."""
    return objective_for(labels).weights(labels, num_classes)


def loss_weights(t: TrainConfig, labels: torch.Tensor, num_classes: int, device: torch.device) -> torch.Tensor | None:
    return class_weights(labels, num_classes).to(device) if t.balance == "weights" else None


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, t: TrainConfig, gen: torch.Generator, *, num_classes: int,
               weight: torch.Tensor | None = None, autocast: Callable = contextlib.nullcontext
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix (if asked), forward, the training loss, backward, step. Returns (loss, logits), both detached; a
    non-finite loss is returned without a step.

    Both loops and the LR range test call this, so the range test measures the loss that training minimises
    (class weights, mixup/cutmix and label smoothing included)."""
    target, objective = y, objective_for(y)
    if t.mixup or t.cutmix:
        x, target = aug.mix_batch(x, y, num_classes, t.mixup, t.cutmix, gen)
    with autocast():
        logits = forward(x)
    loss = objective.loss(logits, target, weight, t.label_smoothing)
    if not torch.isfinite(loss):  # no step: the weights stay as they were; the caller decides what to do
        return loss.detach(), logits.detach()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()
