"""Inference on decoded squares: batched forward passes, test-time augmentation views and temperature.

Training's validation, `evaluate`, `predict`, `serve` and the Python API all call `predict_probs`, so a
probability means the same thing everywhere."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import Runtime
from tunevision.data.augment import eval_view
from tunevision.models.backbones import Classifier


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


# Torch on a CPU, where nothing measured the batch: 8 images a forward call (Lite0 fp32 on a 2-core EPYC: 54-90
# images/s 4-8 at a time, 17-41 at 64). GPUs and ONNX Runtime models take whole batches.
CPU_CHUNK = 8
# ONNX Runtime on a body graph a training run kept, where nothing is timed either: 16 a call (flowers5's 864
# held-out images, three interleaved calls each: 137 against 130 images/s at 8; its sessions' own 512-image rates
# 151 against 141)
ORT_CHUNK = 16


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, runtime: Runtime, size: int, *, temperature: float = 1.0,
                  tta: TTA | None = None, batch_size: int = 64, chunk: int | None = None,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Softmax probabilities for uint8 squares; with `tta`, combined over its views. `chunk` images at a time go
    through the network (default: CPU_CHUNK on a CPU, else the whole batch; see `fastest_exact`)."""
    model.eval()
    if chunk is None and runtime.device.type == "cpu" and not on_onnx_runtime(model):
        chunk = CPU_CHUNK
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


class PathNetwork(torch.nn.Module):
    """A forward path (ONNX Runtime) behind the network's call signature, so that `predict_probs` scores with it."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], multilabel: bool) -> None:
        super().__init__()
        self.run, self.multilabel = forward, multilabel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def on_onnx_runtime(model: torch.nn.Module) -> bool:
    """An exported bundle, or a path measured fastest, run by ONNX Runtime: it sizes its own work."""
    return isinstance(model, PathNetwork) or type(model).__name__.startswith("Onnx")


def fastest_exact(model: torch.nn.Module, images: np.ndarray, runtime: Runtime, size: int, log=None
                  ) -> tuple[torch.nn.Module, int | None]:
    """(network, forward batch) that score `images` fastest here and exactly (fp32, within 1e-5 of the export):
    the model on torch fp32 at 8, 16 or 64 images a batch, or its ONNX export (TorchScript exporter, 1-2 s) on
    ONNX Runtime at 8 or 16, timed on 32 of the images. Torch fp32 on a 2-core EPYC ran Lite0 at 67 images/s 4 at a
    time and 17 at 64, ONNX Runtime at 134-164. The model itself (in `predict_probs`' default batches) on GPUs, for
    ONNX Runtime models and for sets too small to repay the timing."""
    from tunevision.engine.forward import TIMED_FROM, ForwardPath, choose, onnx_forward
    if runtime.device.type != "cpu" or on_onnx_runtime(model) or len(images) < TIMED_FROM:
        return model, None
    model.eval()
    sample = eval_view(torch.from_numpy(np.array(images[:32])), size)
    exact = Runtime(runtime.device, False)
    paths = [ForwardPath("torch fp32", b, True, model, exact) for b in (8, 16, 64)]
    with tempfile.TemporaryDirectory() as folder:  # ONNX Runtime reads the file once, when the session starts
        ort = onnx_forward(model, model.forward, size, Path(folder) / "model.onnx", log)
    if ort is not None:
        paths += [ForwardPath("onnxruntime fp32", b, True, ort, exact) for b in (8, 16)]
    best, rates = choose(paths, sample)
    if log:
        log.info(f"scoring on {best.label} ({rates[best.label]:.0f} images/s; timed: " +
                 ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + ")")
    if best.forward is model:
        return model, best.batch
    return PathNetwork(best.forward, bool(getattr(model, "multilabel", False))), best.batch


def runs_kept_graph(runtime: Runtime) -> bool:
    """Where a network may run its body on the ONNX graph its training run kept: fp32 on a CPU (ONNX Runtime's
    graph is fp32 and CPU-only here; a GPU, or bf16 asked for, keeps torch)."""
    return runtime.device.type == "cpu" and not runtime.bf16


def on_body_graph(model: torch.nn.Module, size: int, runtime: Runtime, cache: Path | None) -> PathNetwork | None:
    """The network with its body on ONNX Runtime, from the graph a training run exported for these very weights
    and statistics (found in `cache` by the body's fingerprint), and its head in torch fp32: exact (features
    within 1e-5 of torch's), with no export to make and no path to time, so that a set too small to repay them
    (hymenoptera's 153 held-out images: torch fp32 at 8 a batch) still scores at ONNX Runtime's rate; a session
    starts in 0.06 s, so one image pays too. The graph must give the body's own features on two seeded images
    first (a cache is the user's folder, not part of the bundle: a damaged or foreign file is not believed).
    None where no such graph is kept (a fine-tuned body, another cache, no onnxruntime) or where `runtime` is not
    fp32 on a CPU (`runs_kept_graph`)."""
    from tunevision.classify.reader import body_fingerprint, body_graph
    from tunevision.engine.forward import onnx_forward
    if cache is None or not isinstance(model, Classifier) or not runs_kept_graph(runtime):
        return None
    path = body_graph(cache, body_fingerprint(model), size)
    features = onnx_forward(model, model.forward_features, size, path) if path.is_file() else None
    if features is None:
        return None
    probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.eval().forward_features(probe)
    if not torch.allclose(features(probe.contiguous(memory_format=torch.channels_last)), want, atol=1e-4, rtol=1e-3):
        return None
    return PathNetwork(lambda x: model.forward_head(features(x)), model.multilabel)
