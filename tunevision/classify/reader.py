"""One view's frozen features of a set of images: read from the disk cache, or computed once on the fastest forward
path this machine has (engine/forward.py, timed on the pass's own first batches) and cached. Head training and the
audit both read through here."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tunevision.classify.features import FEATURE_BATCH, cached_features, extract
from tunevision.classify.prepare import Data, cache_dir
from tunevision.core.config import RunConfig, TrainConfig
from tunevision.core.distributed import Dist
from tunevision.core.runtime import Runtime
from tunevision.core.ui import RunLog
from tunevision.data import augment as aug
from tunevision.engine.forward import (
    TIMED_FROM,
    ForwardPath,
    PathChooser,
    candidates,
    machine_key,
    onnx_forward,
)
from tunevision.models.backbones import Classifier

View = Callable[[torch.Tensor, int], torch.Tensor]


def body_fingerprint(model: Classifier) -> str:
    """What the features depend on: the body's weights and the normalisation in front of it (a run with
    `--normalize data` must not read the features, or the ONNX graph, of one with the backbone's statistics)."""
    h = hashlib.sha1(f"{type(model.body).__name__} {model.head.in_features}".encode())  # same weights, other output
    for v in (model.mean, model.std):
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    for k, v in model.body.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def body_graph(cache: Path, body: str, size: int) -> Path:
    """Where the ONNX graph of a body's features (normalisation included, NHWC input) is kept: by its fingerprint,
    so that evaluation finds the graph its training run exported. Not the NCHW graphs of earlier versions."""
    return cache / "onnx" / f"{body[:20]}-{size}-nhwc.onnx"


# The feature cache's names for the eval view's features: head training and the audit share them, so that an
# audit after a run, or a run after an audit, reads them from disk
TRAIN_EVAL, VAL_EVAL = ["train", "eval"], ["val", "eval"]


def augmented_key(split: str, t: TrainConfig, view: int) -> list[str]:
    """The feature cache's name for augmented view `view` (0 first) of a split's images (`feature_views`' draws)."""
    return [split, t.augment, str(t.seed), str(view), "per-batch"]


def feature_stage(key: list[str]) -> str:
    """The stage a feature pass is charged to, whoever computes it first (head training or the audit)."""
    return f"features {key[0]} {'eval' if key[1] == 'eval' else 'augmented'} view"


def feature_views(t: TrainConfig, data: Data, n: int) -> list[View]:
    """The eval view, then `n` augmented views whose random draws are seeded per view and batch, so that the same
    images get the same crops however they are split between processes (features and activations alike)."""
    pipeline = aug.make_pipeline(t.augment, data.image_size)

    def augmented(v: int) -> View:
        return lambda b, i: pipeline(b, torch.Generator().manual_seed((t.seed * 1000 + v) * 100_003 + i))
    return [lambda b, i: data.prep.batch(b)] + [augmented(v) for v in range(n)]


def sharded_extract(chooser: PathChooser, images: np.ndarray, view: View, exact: bool, d: Dist, advance,
                    width: int) -> tuple[torch.Tensor, bool]:
    """((N, width) features of all images, whether every batch ran on an exact path). Each batch of FEATURE_BATCH
    runs on the path the chooser picks for it (the candidates in turn, then the fastest), and views draw per such
    batch whatever the path's own batch, so every path sees the same crops. Under torchrun each rank extracts a
    share of whole batches on the one path every rank picks alike, and all gather (a rank with no share still
    sends a (0, width) block)."""
    if d.enabled:
        path = chooser.pick(exact)
        spans = d.spans(len(images), FEATURE_BATCH)
        lo, hi = spans[d.rank]
        part = extract(path.forward, images[lo:hi], view, path.runtime, chunk=path.batch, progress=advance,
                       first_batch=lo // FEATURE_BATCH) if hi > lo else torch.empty(0, width)
        return d.gather_rows(part, [b - a for a, b in spans]), path.exact
    out, all_exact = [], True
    for i, start in enumerate(range(0, len(images), FEATURE_BATCH)):
        path = chooser.pick(exact)
        all_exact &= path.exact
        out.append(extract(chooser.timed(path), images[start:start + FEATURE_BATCH], view, path.runtime,
                           chunk=path.batch, progress=advance, first_batch=i))
        chooser.settle()
    return (torch.cat(out) if out else torch.empty(0, width)), all_exact


def forward_paths(model: Classifier, body: str, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, d: Dist
                  ) -> PathChooser:
    """The chooser of forward paths for the features of this body (`body`: its fingerprint), with what the cache
    folder remembers of this machine, backbone and size. Small sets and torchrun ranks keep torch in the run's
    precision, and fp32 where exact features are needed."""
    fn = model.forward_features
    own = ForwardPath(f"torch {'bf16' if rt.bf16 else 'fp32'}", FEATURE_BATCH, not rt.bf16, fn, rt)
    if d.enabled or len(data.train) + len(data.val) < TIMED_FROM:
        exact = ForwardPath("torch fp32", FEATURE_BATCH, True, fn, Runtime(rt.device, False))
        return PathChooser([own, exact], known={exact.label: 1.0, own.label: 2.0})
    folder = cache_dir(cfg)
    scratch = None if folder else tempfile.TemporaryDirectory()  # ONNX Runtime reads the file once, at start

    def onnx():
        path = body_graph(folder if folder else Path(scratch.name), body, data.image_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        return onnx_forward(model, fn, data.image_size, path, log)
    try:
        paths = candidates(fn, rt, onnx)
    finally:
        if scratch:
            scratch.cleanup()
    return PathChooser(paths, folder / "forward_paths.json" if folder else None,
                       machine_key(cfg.model.backbone, data.image_size, rt), log)


def feature_reader(model: Classifier, data: Data, cfg: RunConfig, rt: Runtime, log: RunLog, advance, d: Dist = Dist()
                   ) -> tuple[str, Callable[[np.ndarray, list[str], View], torch.Tensor]]:
    """(the body's fingerprint, `read(images, key, view)`): one view's features, computed once and cached on disk,
    validation keys on exact paths (their features also give the final scores), training keys on the fastest. The
    candidates are made ready at the first feature a cache does not hold, and timed on its first batches. Under
    torchrun rank 0 alone decides whether the cache holds them and writes it."""
    body = body_fingerprint(model)
    base = [body, data.key, str(data.image_size)]
    model.eval()

    chosen: list[PathChooser] = []  # at the first feature the cache lacks, then kept

    def look(key: list[str]) -> torch.Tensor | None:
        # training features may be in either precision, whichever path was fastest when they were computed
        for precision in ("fp32",) if key[0] == "val" else ("bf16", "fp32"):
            found = cached_features(cache_dir(cfg), base + key + [precision], None, log=log)
            if found is not None:
                return found
        return None

    def read(images: np.ndarray, key: list[str], view: View) -> torch.Tensor:
        found = look(key) if d.main else None
        if d.enabled:
            found = d.broadcast(found)
        if found is not None or not len(images):
            return found if found is not None else torch.empty(0, model.head.in_features)
        if not chosen:
            with log.stage("forward paths"):
                chosen.append(forward_paths(model, body, data, cfg, rt, log, d))
        with log.stage(feature_stage(key)):
            feats, exact = sharded_extract(chosen[0], images, view, key[0] == "val", d, advance,
                                           model.head.in_features)
        if d.main:
            cached_features(cache_dir(cfg), base + key + ["fp32" if exact else "bf16"], lambda: feats, log=log)
        return feats
    return body, read
