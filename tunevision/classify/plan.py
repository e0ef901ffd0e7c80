"""`auto --time-budget`: measure this machine, then plan the stages that fit the budget, and say so before starting.

Stages, in the order they are added while the budget allows (each one's cost from rates measured on a few
batches of the run's own images):
  1. the head on cached features of the eval view (always: the fallback, and the head the next stages start from);
  2. up to 3 augmented views of each training image as more cached features;
  3. whole-network fine-tuning from the trained head (the `finetune` recipe, trained at 7/8 of the feature size:
     FixRes), when the rest pays for at least 8 epochs, which on a GPU it usually does; or else
  4. partial fine-tuning: the top stages of the body and the head on cached activations (`partial.py`), for as
     many epochs (3 to 6) as the rest of the budget pays for.
The best stage by validation accuracy is what the bundle keeps, so planning more never keeps a worse model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from tunevision.classify.loops import fit_head, fit_network
from tunevision.classify.partial import TopClassifier, fit_partial, split_body
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import resolve_runtime

FINISH_SECONDS = 6.0   # calibration, the report and the bundle, measured 3-6 s on hymenoptera to caltech101-25
HEAD_SECONDS = 1.0     # 40 epochs of a linear head on cached features: 0.04 s each on caltech101-25 (101 classes)
MAX_VIEWS, PARTIAL_VIEWS, PARTIAL_EPOCHS = 3, 1, (3, 6)
# Whole-network epochs on flowers5 (pretrained BatchNorm statistics kept; the head alone: 75.6 %): 3 at 224 px,
# 78.0 % in 352 s; 8 at 160 px, 79.6 % in 419 s. Partial fine-tuning, 6 epochs: 80.3 % in 475 s. Below 8 epochs
# the partial stage buys more for the time.
FINETUNE_EPOCHS = (8, 20)
BACKWARD_COST = 3  # a training step costs about 3 forward passes: an optimistic bound, to skip measuring in vain
MARGIN = 0.9  # plan to 90 % of the budget: a few timed batches misjudge a long extraction by 10-30 %


def parse_budget(text: str) -> float:
    """'90', '90s', '2m', '1.5m', '1h' -> seconds; '' -> 0 (no budget)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "0")
    if not m:
        raise TunevisionError(f"time_budget must be seconds or a duration like 90s, 2m, 1h; got {text!r}")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


@dataclass
class Rates:
    """Images per second of each kind of work, measured on this machine for this run's backbone and size."""
    features: float        # frozen backbone forward (eval or augmented view)
    trunk: float           # forward through the trunk below the top stages (activations to cache)
    top_train: float       # training the top stages + head on cached activations
    network_train: float = 0.0  # whole-network training steps at the fine-tuning size (0: not measured)


@dataclass
class Stage:
    name: str
    planned_s: float
    detail: str = ""
    measured_s: float | None = None  # None: not measured separately (views are extracted with the head)


@dataclass
class Plan:
    budget_s: float
    used_s: float                   # already spent (decoding) when the plan was made
    views: int = 0
    partial_epochs: int = 0
    finetune_epochs: int = 0
    stages: list[Stage] = field(default_factory=list)

    @property
    def planned_s(self) -> float:
        return self.used_s + sum(s.planned_s for s in self.stages)

    def describe(self) -> str:
        lines = [f"plan for a {self.budget_s:.0f} s budget ({self.used_s:.0f} s already spent decoding):"]
        lines += [f"  {s.name:<28s} {s.planned_s:6.1f} s" + (f" (took {s.measured_s:.1f} s)" if s.measured_s
                                                               is not None else "") + f"  {s.detail}" for s in self.stages]
        lines.append(f"  {'total':<28s} {self.planned_s:6.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"budget_s": self.budget_s, "used_s": round(self.used_s, 1), "views": self.views,
                "partial_epochs": self.partial_epochs,
                "finetune_epochs": self.finetune_epochs, "stages": [asdict(s) for s in self.stages]}


def make_plan(budget_s: float, used_s: float, n_train: int, n_val: int, rates: Rates, *, partial: bool = True) -> Plan:
    """The stages that fit in `budget_s - used_s`, cheapest first (a pure function of the measured rates)."""
    plan = Plan(budget_s, used_s)
    eval_s = (n_train + n_val) / rates.features + HEAD_SECONDS
    plan.stages.append(Stage("head on frozen features", eval_s, f"{n_train} + {n_val} images"))
    plan.stages.append(Stage("finish (calibrate, report)", FINISH_SECONDS + n_val / rates.features))
    left = MARGIN * budget_s - plan.planned_s
    view_s = n_train / rates.features
    plan.views = int(max(0, min(MAX_VIEWS, left // view_s)))
    if plan.views:
        plan.stages.insert(1, Stage(f"{plan.views} augmented view(s)", plan.views * view_s,
                                    f"{plan.views} x {n_train} images"))
    left = MARGIN * budget_s - plan.planned_s
    if rates.network_train:
        epoch_s = n_train / rates.network_train + n_val / rates.features  # training, then validation
        epochs = int(min(FINETUNE_EPOCHS[1], left // epoch_s))
        if epochs >= FINETUNE_EPOCHS[0]:
            plan.finetune_epochs = epochs
            plan.stages.insert(-1, Stage("whole-network fine-tuning", epochs * epoch_s,
                                         f"{epochs} epochs from the trained head"))
            return plan
    if partial:
        cache_s = ((1 + PARTIAL_VIEWS) * n_train + n_val) / rates.trunk
        epoch_s = (1 + PARTIAL_VIEWS) * n_train / rates.top_train
        epochs = int(min(PARTIAL_EPOCHS[1], (left - cache_s) // epoch_s)) if left > cache_s else 0
        if epochs >= PARTIAL_EPOCHS[0]:
            plan.partial_epochs = epochs
            plan.stages.insert(-1, Stage("partial fine-tuning", cache_s + epochs * epoch_s,
                                         f"top stages, {epochs} epochs on {1 + PARTIAL_VIEWS} view(s)"))
    return plan


def _rate(fn, n: int, repeats: int = 2) -> float:
    """Images/s of fn over n images: the slower of `repeats` timed calls after a warm-up (first-call allocations
    and kernel selection), since planning on an optimistic rate overruns the budget."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / max(max(times), 1e-6)


def finetune_size(image_size: int) -> int:
    """Whole-network training size: 7/8 of the feature size (FixRes: evaluation at 8/7 of the training size
    suits RandomResizedCrop training), a multiple of 32."""
    return max(32, int(round(image_size * 7 / 8 / 32)) * 32)


def _sample(data, batch: int, device: torch.device) -> torch.Tensor:
    """The first `batch` training images, preprocessed as the eval view, on `device`."""
    images = torch.from_numpy(np.array(data.train_images[:batch]))
    return data.prep.batch(images).to(device).contiguous(memory_format=torch.channels_last)


def _training_rate(model, net: torch.nn.Module, x: torch.Tensor, loss_fn, optimizer, autocast=contextlib.nullcontext,
                   repeats: int = 2) -> float:
    """Images/s of training steps of `net` (a part of `model`, or all of it) on `x`, at learning rate 0; the
    model's state is put back afterwards, since BatchNorm statistics move during the timing."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = optimizer(net.parameters(), lr=0.0)

    def step() -> None:
        with autocast():
            loss = loss_fn(net(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    rate = _rate(step, len(x), repeats)
    model.load_state_dict(state)
    return rate


def network_rate(model, data, rt_train, batch: int = 32) -> float:
    """Images/s of whole-network training steps (forward, backward, AdamW update) at the fine-tuning size, in
    the training's own batch size: 16-image SGD steps planned hymenoptera's epochs 34 % short."""
    size = finetune_size(data.image_size)
    x = _sample(data, batch, rt_train.device)[..., :size, :size]
    y = torch.zeros(len(x), dtype=torch.long, device=rt_train.device)
    model.train().requires_grad_(True)
    rate = _training_rate(model, model, x, lambda logits: torch.nn.functional.cross_entropy(logits, y),
                          torch.optim.AdamW, rt_train.autocast, repeats=1)
    model.eval().body.requires_grad_(False)
    return rate


def measure_rates(model, data, rt, top_stages: int, batch: int = 32) -> Rates:
    """A couple of batches of each kind of work on the run's own images (a few seconds); whole-network training
    is measured apart (`network_rate`), only when the budget could pay for it."""
    x = _sample(data, batch, rt.device)
    model.eval()
    with torch.no_grad(), rt.autocast():
        features = _rate(lambda: model.forward_features(x), len(x))
    try:
        trunk, top = split_body(model.body, top_stages)
    except TunevisionError:
        return Rates(features, 1e-9, 1e-9)  # this backbone cannot do partial fine-tuning: never planned
    normalize = (x - model.mean) / model.std
    with torch.no_grad(), rt.autocast():
        trunk_rate = _rate(lambda: trunk(normalize), len(x))
        acts = trunk(normalize).float()
    top_rate = _training_rate(model, TopClassifier(top, model).train(), acts,
                              lambda logits: logits.logsumexp(1).mean(), torch.optim.SGD)
    model.eval()
    return Rates(features, trunk_rate, top_rate)


def fit_within_budget(model, data, cfg, rt, log, on_epoch, d, started: float) -> tuple[list, Plan]:
    """`auto` with a time budget: measure, plan, print the plan, run its stages; one history across the stages
    (the run folder keeps the best epoch of any stage)."""
    t = cfg.train
    if d.enabled:
        raise TunevisionError("--time-budget plans for one process; under torchrun give --views and --epochs instead")
    budget = parse_budget(t.time_budget)
    rates = measure_rates(model, data, rt, top_stages=3)
    rt_train = resolve_runtime(t.device, t.precision, training=True)
    n_train, n_val = len(data.train), len(data.val)
    optimistic_epoch_s = (BACKWARD_COST * n_train + n_val) / rates.features
    if budget - (time.perf_counter() - started) > FINETUNE_EPOCHS[0] * optimistic_epoch_s:
        rates = dataclasses.replace(rates, network_train=network_rate(model, data, rt_train, t.batch_size))
    plan = make_plan(budget, time.perf_counter() - started, n_train, n_val, rates)
    log.info(plan.describe())
    start = time.perf_counter()
    head_cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, views=plan.views))
    history = fit_head(model, data, head_cfg, rt, log, on_epoch, d)
    plan.stages[0].measured_s = round(time.perf_counter() - start, 1)  # with the views: one progress, one pass
    earlier = list(history)

    def continued(h: list) -> list:  # a later stage's epochs numbered after the earlier ones, in one history
        return earlier + [dataclasses.replace(r, epoch=len(earlier) + r.epoch) for r in h]
    if plan.finetune_epochs:
        start = time.perf_counter()
        whole = dataclasses.replace(cfg, train=t.for_mode(
            "finetune", epochs=plan.finetune_epochs, lr=0.0, freeze_epochs=0, early_stopping=0,
            sizes=str(finetune_size(data.image_size))))
        model.body.requires_grad_(True)
        # no checkpoint, as in the other stages: a budgeted run is not resumable; a new one finds the features cached
        history = continued(fit_network(model, data, whole, rt_train, log,
                                        lambda h, m, c: on_epoch(continued(h), m, None), None, d))
        plan.stages[-2].measured_s = round(time.perf_counter() - start, 1)
    elif plan.partial_epochs:
        start = time.perf_counter()
        partial = dataclasses.replace(cfg, train=t.for_mode("partial", epochs=plan.partial_epochs, lr=0.0,
                                                            views=PARTIAL_VIEWS, early_stopping=0))
        history = continued(fit_partial(model, data, partial, rt, log, lambda h, m, c: on_epoch(continued(h), m, c),
                                        d))
        plan.stages[-2].measured_s = round(time.perf_counter() - start, 1)
    return history, plan
