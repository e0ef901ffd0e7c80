"""Frozen-backbone features: computed once per (weights, images, view), cached, then reused every epoch."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunevision.core.runtime import Runtime
from tunevision.models.backbones import Classifier

FEATURE_BATCH = 64


@torch.no_grad()
def extract(forward: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray,
            view: Callable[[torch.Tensor, int], torch.Tensor], runtime: Runtime, *, batch_size: int = FEATURE_BATCH,
            chunk: int | None = None, progress: Callable[[int], None] | None = None, first_batch: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """forward(view(batch, index)) for uint8 squares `images`, batch by batch, concatenated on the CPU in `dtype`.
    The index counts batches from `first_batch`, so that a view's random draws can be seeded per batch and stay
    the same however the images are split between processes. `chunk` images at a time go through `forward`
    (default: the whole batch): the fastest forward batch is a property of the machine, the views' draws are not."""
    out = []
    step = chunk or batch_size
    for i, start in enumerate(range(0, len(images), batch_size)):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: memmaps are read-only
        x = view(batch, first_batch + i).to(runtime.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        with runtime.autocast():
            out += [forward(x[j:j + step]).to(dtype).cpu() for j in range(0, len(x), step)]
        if progress:
            progress(len(batch))
    return torch.cat(out) if out else torch.empty(0)


def extract_features(model: Classifier, images: np.ndarray, view: Callable[[torch.Tensor, int], torch.Tensor],
                     runtime: Runtime, batch_size: int = FEATURE_BATCH,
                     progress: Callable[[int], None] | None = None, first_batch: int = 0) -> torch.Tensor:
    """(N, num_features) float32 pooled features of the frozen network (see `extract`)."""
    model.eval()
    if not len(images):
        return torch.empty(0, model.head.in_features)
    return extract(model.forward_features, images, view, runtime, batch_size=batch_size, progress=progress,
                   first_batch=first_batch)


def cached_features(cache_dir: Path | None, key_parts: list[str], compute: Callable[[], torch.Tensor] | None,
                    log=None) -> torch.Tensor | None:
    """Load `<cache>/features/<sha1(key_parts)>.safetensors` or compute and store it atomically. A file that
    does not read back whole (cut short by a crash or a full disk) is deleted, rebuilt and reported. With
    `compute=None`, only look: the cached features or None."""
    if cache_dir is None:
        return compute() if compute else None
    key = hashlib.sha1("\n".join(key_parts).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "features" / f"{key}.safetensors"
    if path.is_file():
        try:
            feats = load_file(str(path))["features"]
            if feats.dim() == 2:
                return feats
            raise ValueError(f"shape {tuple(feats.shape)}")
        except Exception as e:  # safetensors raises its own error types for damaged files
            path.unlink(missing_ok=True)
            if log:
                log.info(f"[yellow]damaged feature cache {path} ({type(e).__name__}): deleted, rebuilding[/]")
    if compute is None:
        return None
    feats = compute()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, path)
    except Exception as e:  # OSError, or safetensors' SafetensorError on a full disk: speed next time, not this run
        tmp.unlink(missing_ok=True)
        if not isinstance(e, OSError) and type(e).__name__ != "SafetensorError":
            raise
        if log:
            log.info(f"[yellow]feature cache not written ({path.parent}: {getattr(e, 'strerror', None) or e}); "
                     "continuing[/]")
    return feats
