"""Partial fine-tuning on cached activations: run the frozen trunk once per image view, store what enters the top
stages, then train those stages and the head for many epochs without running the trunk again.

The body is split into `trunk` and `top` only where it is a plain sequence of modules (timm's EfficientNets and
MobileNets, the tiny test CNNs); `split_body` checks that top(trunk(x)) equals body(x) before anything is trained,
and refuses otherwise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from tunevision.classify.features import extract
from tunevision.classify.loops import fit_cached, repeat_rows
from tunevision.classify.reader import feature_views
from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import Classifier, body_stages


def _parts(body: nn.Module) -> list[nn.Module]:
    """The body's modules in forward order, containers of blocks expanded (as `body_stages` does), parameterless
    modules (activations, pooling) kept."""
    parts: list[nn.Module] = []
    for child in body.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and all(any(True for _ in c.children()) for c in child):
            parts += list(child.children())
        else:
            parts.append(child)
    return parts


class Top(nn.Module):
    """The top stages of a body, their pooled output flattened as the body's is."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x).flatten(1)


def split_body(body: nn.Module, top_stages: int) -> tuple[nn.Sequential, Top]:
    """(trunk, top) with `top_stages` parameterised stages (see models.body_stages) in the top."""
    stages = body_stages(body)
    if not 1 <= top_stages < len(stages):
        raise TunevisionError(f"top_stages must be in 1..{len(stages) - 1} for this backbone, got {top_stages}")
    parts = _parts(body)
    first = stages[-top_stages][0]
    cut = next((i for i, p in enumerate(parts) if p is first), None)
    if cut is None:
        raise TunevisionError("this backbone cannot be split for partial fine-tuning (its stages are nested)")
    trunk, top = nn.Sequential(*parts[:cut]), Top(parts[cut:])
    was_training = body.training
    body.eval()
    with torch.no_grad():
        x = torch.rand(2, 3, 64, 64)
        ok = torch.allclose(top(trunk(x)), body(x).flatten(1), atol=1e-4)
    body.train(was_training)
    if not ok:
        raise TunevisionError("this backbone's forward pass is not a plain sequence of modules; partial "
                              "fine-tuning on cached activations is not available for it")
    return trunk, top


def trunk_activations(trunk: nn.Module, images: np.ndarray, view: Callable[[torch.Tensor, int], torch.Tensor],
                      normalize: Callable[[torch.Tensor], torch.Tensor], rt, progress: Callable[[int], None] | None = None
                      ) -> torch.Tensor:
    """The activations entering the top stages, in fp16 (half the memory; the top trains in fp32 on them)."""
    trunk.eval()
    return extract(lambda x: trunk(normalize(x)), images, view, rt, progress=progress, dtype=torch.float16)


class TopClassifier(nn.Module):
    """What trains in partial fine-tuning: the top stages and the head, fed cached activations."""

    def __init__(self, top: Top, model: Classifier) -> None:
        super().__init__()
        self.top, self.dropout, self.head = top, model.dropout, model.head

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.top(activations.float())))


def fit_partial(model: Classifier, data, cfg, rt, log, on_epoch, d) -> list:
    """`--mode partial`: activations entering the top `top_stages` stages, for the eval view and `views` augmented
    views of each training image, are computed once; then the top stages and the head train on them."""
    t = cfg.train
    if d.enabled:
        raise TunevisionError("--mode partial runs in one process for now; use finetune or auto under torchrun")
    trunk, top = split_body(model.body, t.top_stages)
    trunk.requires_grad_(False)
    top.requires_grad_(True)  # after the head stage of a plan, the whole body is frozen: thaw the top
    normalize = lambda x: (x - model.mean) / model.std  # noqa: E731  (what Classifier.forward_features does first)
    views = feature_views(t, data, t.views)
    with log.stage("activations"), log.progress(len(data.val) + len(data.train) * len(views),
                                                "activations entering the top stages") as adv:
        train = [trunk_activations(trunk, data.train_images, view, normalize, rt, progress=adv) for view in views]
        val = trunk_activations(trunk, data.val_images, views[0], normalize, rt, progress=adv)
    net = TopClassifier(top, model).to(rt.device)
    lr = t.resolved_lr()
    opt = torch.optim.AdamW([{"params": list(net.top.parameters()), "lr": lr},
                             {"params": list(net.head.parameters()), "lr": lr * t.head_lr_mult}],
                            weight_decay=t.weight_decay)
    # the top's modules are the model's: on_epoch keeps the state of the whole trained network
    history = fit_cached(net, model, torch.cat(train), repeat_rows(data.train_labels, len(views)), val, data, t, rt, opt,
                         on_epoch, batch=t.batch_size, min_batch=2, train_bn=cfg.batchnorm_trains)
    model.eval()
    return history
