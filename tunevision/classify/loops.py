"""The two training loops. Both call `optim.train_step` and report each epoch to `RunFolder.on_epoch`.

  * `fit_head` (modes freeze and auto): the backbone runs once per image view, then the linear head trains on
    the stored features for many epochs at almost no cost;
  * `fit_network` (modes finetune and scratch): augmented uint8 batches, AdamW/SGD, one-cycle, bf16 autocast,
    a checkpoint every epoch (--resume).
"""
from __future__ import annotations

import dataclasses
import math
import time
import types
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tunevision.classify.inference import predict_probs
from tunevision.classify.prepare import Data
from tunevision.classify.reader import (
    TRAIN_EVAL,
    VAL_EVAL,
    augmented_key,
    feature_reader,
    feature_views,
)
from tunevision.core.config import RunConfig, TrainConfig
from tunevision.core.distributed import Dist
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import Runtime, compiled_for_training
from tunevision.core.ui import RunLog
from tunevision.data import augment as aug
from tunevision.engine.objective import objective_for
from tunevision.engine.optim import (
    epoch_order,
    loss_weights,
    make_optimizer,
    make_scheduler,
    train_step,
)
from tunevision.engine.rundir import EpochRecord
from tunevision.models.backbones import (
    Classifier,
    StageFeatures,
    body_stages,
    training_mode,
)

OnEpoch = Callable[[list[EpochRecord], nn.Module, Callable[[], dict] | None], bool]
HEAD_BATCH = 256  # features are cheap: big batches mean few optimizer steps per epoch
# In auto mode, augmented feature views stop at this many images: on hymenoptera (245 train images) three
# views gave +0.7 points, on flowers5 (3,453) none measurable, while each view of 3,453 costs ~45 s on 2 cores.
AUTO_VIEW_BUDGET = 4000


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise TunevisionError(f"the training loss became {loss.item()} at epoch {epoch}, step {step}; the last "
                              "good checkpoint and bundle are kept. Lower --lr (or try --lr auto) and retry")


def val_metrics(probs: np.ndarray, labels: torch.Tensor) -> tuple[float, float]:
    """(loss, score): cross-entropy and accuracy, or for multi-label targets binary cross-entropy and macro mAP."""
    return objective_for(labels).val_metrics(probs, labels.numpy())


def head_features(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, d: Dist = Dist()
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train features of every view, their labels, val features), each computed once and cached on disk (by
    rank 0 alone, which also decides for every rank whether the cache already holds them)."""
    t = cfg.train
    # auto's fixed recipe caps the views; with a time budget, the plan has already chosen them
    views = t.views if t.mode == "freeze" or t.time_budget else min(t.views, AUTO_VIEW_BUDGET // len(data.train))
    eval_view, *augmented = feature_views(t, data, views)
    total = len(data.val) + len(data.train) * (1 + views)
    with log.progress(total, f"features ({1 + views} train views + val)") as advance:
        body, features = feature_reader(model, data, cfg, rt, log, advance, d)
        val_f = features(data.val_images, VAL_EVAL, eval_view)
        data.val_features = (body, val_f)
        train_f = [features(data.train_images, TRAIN_EVAL, eval_view)]
        train_f += [features(data.train_images, augmented_key("train", t, v), view) for v, view in enumerate(augmented)]
    return torch.cat(train_f), repeat_rows(data.train_labels, 1 + views), val_f


def repeat_rows(labels: torch.Tensor, times: int) -> torch.Tensor:
    """The targets of `times` views of the same images, one after the other (class indices or multi-label rows)."""
    return labels.repeat(times, *[1] * (labels.dim() - 1))


def fit_head(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog,
             on_epoch: OnEpoch, d: Dist = Dist()) -> list[EpochRecord]:
    """Frozen backbone: features for the eval view and `views` augmented views, once; then the head only (on rank
    0 under torchrun: it takes seconds; the trained head is broadcast)."""
    model.body.requires_grad_(False).eval()  # BatchNorm statistics stay those of pretraining
    x, y, val_x = head_features(model, data, cfg, rt, log, d)
    history = []
    chooses = cfg.model.features == "auto" and not data.dataset.multilabel and isinstance(model.body, StageFeatures)
    if d.main and chooses:
        stages, final = probe_features(model, x[:len(data.train)], y[:len(data.train)], val_x, data, cfg.train, rt)
        log.info(f"features: {'stage' if stages > final else 'final'} features (a head on the eval view: "
                 f"validation {stages:.2%} with the stages' beside the final, {final:.2%} on the final alone)")
        if stages <= final:
            x, val_x = final_only(model, x), final_only(model, val_x)
    if d.main:
        history = fit_cached(nn.Sequential(model.dropout, model.head), model, x.to(rt.device), y.to(rt.device),
                             val_x.to(rt.device), data, cfg.train, rt, head_optimizer(model.head, cfg.train), on_epoch,
                             batch=HEAD_BATCH, min_batch=1)
    if d.enabled:
        model.head.load_state_dict(d.broadcast(model.head.state_dict()))
    return history


def probe_features(model: Classifier, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, data: Data,
                   t: TrainConfig, rt: Runtime) -> tuple[float, float]:
    """`--features auto` for single-label data: the best validation accuracy of a head trained (the run's own
    recipe, the eval view alone) on the stage features beside the final ones, and of one on the final features
    alone. Stages took MNIST from 96.65 to 98.95 % and flowers5 from 76.39 to 77.08 %, and cost caltech101-25
    (17 images a class, 101 classes) 90.97 -> 90.22 %: which pays depends on the data."""
    scores = []
    # its own seeded draws, the run's left as they were: a resumed run probes to the same choice
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        for width in (x.shape[1], model.body.final_width):
            head = nn.Linear(width, model.head.out_features)
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
            net = nn.Sequential(nn.Dropout(model.dropout.p), head).to(rt.device)
            opt = head_optimizer(head, t)
            history = fit_cached(net, model, x[:, -width:].to(rt.device), y.to(rt.device),
                                 val_x[:, -width:].to(rt.device), data, t, rt, opt, lambda *_: False,
                                 batch=HEAD_BATCH, min_batch=1)
            scores.append(max((r.val_acc for r in history), default=0.0))
    return scores[0], scores[1]


def head_optimizer(head: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """The head's own optimizer (its LR group as make_optimizer gives it) for training on frozen features: with the
    body's 300 frozen tensors in it too, each AdamW step and zero_grad walked them all, 6-7 % of the head's
    training time (flowers5's 2,160 steps: 3.55 -> 3.33 s and 2.39 -> 2.23 s in two pairs)."""
    return make_optimizer(types.SimpleNamespace(body=nn.Module(), head=head), t)


def final_only(model: Classifier, features: torch.Tensor) -> torch.Tensor:
    """The features with the stage columns zeroed, and the head's weights on them too: trained so, the head reads
    the final features alone and keeps them at zero (no gradient reaches them, and decay keeps zero at zero), so
    the bundle's stage-feature body gives a final-features model."""
    stage_width = features.shape[1] - model.body.final_width
    with torch.no_grad():
        model.head.weight[:, :stage_width] = 0
    out = features.clone()
    out[:, :stage_width] = 0
    return out


def fit_cached(net: nn.Module, model: Classifier, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, data: Data,
               t: TrainConfig, rt: Runtime, opt: torch.optim.Optimizer, on_epoch: OnEpoch, *, batch: int,
               min_batch: int, train_bn: bool = False) -> list[EpochRecord]:
    """Epochs over cached inputs: the head on features, or the top stages and head on activations. `net` maps a
    cached input to logits; batches smaller than `min_batch` are skipped (BatchNorm needs 2)."""
    epochs = t.resolved_epochs()
    sched = make_scheduler(opt, t.schedule, epochs * sum(1 for i in range(0, len(x), batch) if len(x) - i >= min_batch))
    gen = torch.Generator().manual_seed(t.seed)
    weight = loss_weights(t, y, model.head.out_features, rt.device)
    objective = objective_for(y)
    history: list[EpochRecord] = []
    for epoch in range(1, epochs + 1):
        start, total, correct = time.perf_counter(), 0.0, 0
        training_mode(net, train_bn)
        for step, idx in enumerate(epoch_order(y.cpu(), t.balance, gen).split(batch)):
            if len(idx) < min_batch:
                continue
            xb, yb = x[idx].to(rt.device), y[idx].to(rt.device)
            loss, logits = train_step(net, xb, yb, opt, t, gen, num_classes=model.head.out_features, weight=weight)
            check_finite(loss, epoch, step)
            sched.step()
            total += loss.item() * len(idx)
            correct += objective.hits(logits, yb)
        net.eval()
        with torch.no_grad():
            probs = torch.cat([objective.probs(net(val_x[i:i + 256].to(rt.device))).cpu()
                               for i in range(0, len(val_x), 256)]).numpy()
        val_loss, val_acc = val_metrics(probs, data.val_labels)
        history.append(EpochRecord(epoch, total / len(x), correct / len(x), val_loss, val_acc,
                                   opt.param_groups[-1]["lr"], time.perf_counter() - start, size=data.image_size))
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


def warm_head(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, d: Dist = Dist()) -> None:
    """fastai's fine_tune recipe, first half: the new head learns on the frozen body before anything else
    moves, so the whole-network phase does not start by pushing a random head's gradients into pretrained
    weights. Done on cached features (no augmented views), it costs one forward pass over the images."""
    head_train = cfg.train.for_mode("freeze", epochs=cfg.train.freeze_epochs, lr=0.0, views=0, early_stopping=0)
    history = fit_head(model, data, dataclasses.replace(cfg, train=head_train), rt, log, lambda *_: False, d)
    model.body.requires_grad_(True)
    if history:
        log.info(f"head warm-up ({len(history)} epochs on frozen features): val acc {history[-1].val_acc:.4f}")


def train_one_epoch(model: nn.Module, images: np.ndarray, labels: torch.Tensor, pipeline, opt, sched,
                    rt: Runtime, cfg: RunConfig, gen: torch.Generator, advance, ema=None,
                    frozen: Sequence[nn.Module] = (), epoch: int = 0, d: Dist = Dist(),
                    aug_gen: torch.Generator | None = None) -> tuple[float, float]:
    """One pass in global batches of batch_size drawn from `gen` (the same order on every rank); each rank trains on
    its share of each batch, augmented with `aug_gen` (its own stream; `gen` in a single process)."""
    aug_gen = aug_gen or gen
    training_mode(model, cfg.batchnorm_trains)
    for m in frozen:  # frozen stages keep their BatchNorm statistics too
        m.eval()
    total_loss, correct, seen = 0.0, 0, 0
    num_classes = getattr(model, "module", model).head.out_features
    weight = loss_weights(cfg.train, labels, num_classes, rt.device)
    for step, idx in enumerate(epoch_order(labels, cfg.train.balance, gen).split(cfg.train.batch_size)):
        if len(idx) < 2 * d.world:  # BatchNorm cannot train on a batch of one (per rank)
            continue
        idx = d.shard(idx).sort().values  # read the memory-mapped cache in file order
        batch = torch.from_numpy(images[idx.numpy()])
        if rt.device.type == "cuda":  # augment on the device: upload uint8 (4x less than float), pinned, async
            batch = batch.pin_memory().to(rt.device, non_blocking=True)
        x = pipeline(batch, aug_gen).to(rt.device, non_blocking=True)
        y = labels[idx].to(rt.device)
        loss, logits = train_step(model, x, y, opt, cfg.train, aug_gen, num_classes=num_classes, weight=weight,
                                  autocast=rt.autocast)
        check_finite(loss, epoch, step)
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.item() * len(idx)
        correct += objective_for(y).hits(logits, y)
        seen += len(idx)
        advance(len(idx))
    return total_loss / max(seen, 1), correct / max(seen, 1)


def sharded_probs(model: nn.Module, images: np.ndarray, rt: Runtime, size: int, d: Dist) -> np.ndarray:
    """Validation probabilities of all images; under torchrun each rank scores its share and all gather."""
    if not d.enabled:
        return predict_probs(model, images, rt, size)
    spans = d.spans(len(images))
    lo, hi = spans[d.rank]
    return d.gather_rows(torch.from_numpy(predict_probs(model, images[lo:hi], rt, size)),
                         [b - a for a, b in spans]).numpy()


def fit_network(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, on_epoch: OnEpoch,
                resume: dict | None, d: Dist = Dist()) -> list[EpochRecord]:
    """The whole network trains (under torchrun as DistributedDataParallel); a checkpoint after every epoch makes a
    killed run resumable. Only rank 0 keeps the books (`on_epoch`); its stop decision reaches every rank."""
    t = cfg.train
    pipelines: dict[int, object] = {}  # one compiled augmentation pipeline per training size
    epochs = t.resolved_epochs()
    opt = make_optimizer(model, t)
    steps_per_epoch = sum(1 for i in range(0, len(data.train), t.batch_size) if len(data.train) - i >= 2 * d.world)
    sched = make_scheduler(opt, t.schedule, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(t.seed)
    aug_gen = torch.Generator().manual_seed(t.seed * 7919 + d.rank) if d.enabled else gen  # per-rank draws
    history: list[EpochRecord] = []
    ema = None
    if t.ema:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
    if resume:
        if ema is not None and resume.get("ema"):
            ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history = [EpochRecord(**r) for r in resume["history"]]
    labels, stages = data.train_labels, body_stages(model.body)
    trained = model  # what runs the training steps: the model itself, or its compiled / DDP wrapper
    if t.compile:
        example = data.prep.batch(torch.from_numpy(np.array(data.train_images[:t.batch_size])))
        trained = compiled_for_training(model, example.to(rt.device).contiguous(memory_format=torch.channels_last),
                                        log)
    if d.enabled:
        trained = DistributedDataParallel(trained, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    for epoch in range(len(history) + 1, epochs + 1):
        start = time.perf_counter()
        frozen = freeze_stages(stages, trainable_stages(epoch, epochs, len(stages), t.unfreeze))
        size = size_for_epoch(epoch, epochs, t.size_schedule(), data.image_size)
        if size not in pipelines:  # compile (and dry-run) each size's pipeline once, not every epoch
            pipelines[size] = aug.make_pipeline(t.augment, size)
        with log.progress(len(labels), f"epoch {epoch}/{epochs} ({size}px)") as advance:
            train_loss, train_acc = d.mean(train_one_epoch(trained, data.train_images, labels, pipelines[size], opt,
                                                           sched, rt, cfg, gen, advance, ema, frozen, epoch, d,
                                                           aug_gen))
        val_loss, val_acc = val_metrics(sharded_probs(model, data.val_images, rt, data.image_size, d), data.val_labels)
        candidate, ema_acc = model, math.nan
        if ema is not None:  # the better of raw and averaged weights competes for "best"
            ema_loss, ema_acc = val_metrics(sharded_probs(ema.module, data.val_images, rt, data.image_size, d),
                                            data.val_labels)
            if (ema_acc, -ema_loss) > (val_acc, -val_loss):
                candidate, val_loss, val_acc = ema.module, ema_loss, ema_acc
        history.append(EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, opt.param_groups[-1]["lr"],
                                   time.perf_counter() - start, ema_acc, size))
        stop = d.main and on_epoch(history, candidate, lambda: {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "ema": ema.state_dict() if ema is not None else None, "history": [r.__dict__ for r in history]})
        if d.broadcast(stop):
            break
    return history
