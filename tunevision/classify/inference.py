"""Inference on decoded squares: batched forward passes, test-time augmentation views and temperature.

Training's validation, `evaluate`, `predict`, `serve` and the Python API all call `predict_probs`, so a
probability means the same thing everywhere."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import Runtime
from tunevision.data.augment import eval_view


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: the centre crop, its mirror and `crops` random crops (each mirrored or not),
    combined by `reduce` (mean, or max renormalised). The crops are drawn once from `seed`, so a TTA score
    is reproducible and every image in a batch sees the same views."""
    crops: int = 2
    reduce: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crops < 0 or self.reduce not in ("mean", "max"):
            raise TunevisionError(f"TTA needs crops >= 0 and reduce mean or max (got {self.crops}, {self.reduce!r})")

    def views(self, size: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        views = [lambda b: eval_view(b, size), lambda b: eval_view(b, size).flip(3)]
        g = torch.Generator().manual_seed(self.seed)
        for fy, fx, flip in torch.rand(self.crops, 3, generator=g).tolist():
            def crop(b: torch.Tensor, fy=fy, fx=fx, flip=flip > 0.5) -> torch.Tensor:
                # a size-pixel window of the resize square; where the square is no larger, a 7/8 window scaled up
                side = size if b.shape[1] > size else round(size * 7 / 8)
                top, left = round(fy * (b.shape[1] - side)), round(fx * (b.shape[2] - side))
                x = eval_view(b[:, top:top + side, left:left + side], side)
                if side != size:
                    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
                return x.flip(3) if flip else x
            views.append(crop)
        return views


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, runtime: Runtime, size: int, *, temperature: float = 1.0,
                  tta: TTA | None = None, batch_size: int = 64, chunk: int | None = None,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Softmax probabilities for uint8 squares; with `tta`, combined over its views. `chunk` images at a time go
    through the network (default: the whole batch; see `fastest_batch`)."""
    model.eval()
    views = tta.views(size) if tta else [lambda b: eval_view(b, size)]
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: memmaps are read-only
        per_view = []
        for view in views:
            x = view(batch).to(runtime.device).contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                step = chunk or len(x)
                logits = torch.cat([model(x[j:j + step]).float() for j in range(0, len(x), step)])
                logits = logits / temperature  # temperature: one, or one per label (multi-label)
                per_view.append(torch.sigmoid(logits) if getattr(model, "multilabel", False) else
                                torch.softmax(logits, 1))
        p = torch.stack(per_view)
        if tta and tta.reduce == "max":
            p = p.amax(0)
            p = p if getattr(model, "multilabel", False) else p / p.sum(1, keepdim=True)
        else:
            p = p.mean(0)
        out.append(p.cpu().numpy())
        if progress:
            progress(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)



def fastest_batch(model: torch.nn.Module, images: np.ndarray, runtime: Runtime, size: int) -> int | None:
    """The forward batch that runs `model` fastest here, timed on 32 of `images` (8, 16 or 64: torch fp32 on a
    2-core EPYC ran Lite0 at 67 images/s 4 at a time and 17 at 64); None (whole batches) on GPUs, for ONNX
    Runtime models and for small sets."""
    from tunevision.engine.forward import TIMED_FROM, ForwardPath, choose
    onnx = type(model).__name__.startswith("Onnx")  # ONNX Runtime sizes its own work
    if runtime.device.type != "cpu" or onnx or len(images) < TIMED_FROM:
        return None
    model.eval()
    sample = eval_view(torch.from_numpy(np.array(images[:32])), size)
    paths = [ForwardPath("torch", b, not runtime.bf16, model, runtime) for b in (8, 16, 64)]
    return choose(paths, sample, None, "")[0].batch
