"""Metrics as pure functions on labels and probabilities, and `evaluate_bundle` for a folder of images."""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import eval_view
from .bundle import BundleMeta, load_bundle
from .data import Sample, discover, drop_skipped, load_images
from .errors import TunevisionError
from .models import Classifier
from .runtime import INFERENCE_PRECISION, Runtime, resolve_runtime


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of images of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / support)
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


@dataclass
class Evaluation:
    classes: list[str]
    labels: np.ndarray   # (N,)
    probs: np.ndarray    # (N, C)
    paths: list[str]
    seconds: float = 0.0  # inference time, when measured

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if len(self.labels) else 0.0

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.preds, len(self.classes))

    def losses(self) -> np.ndarray:
        return -np.log(np.clip(self.probs[np.arange(len(self.labels)), self.labels], 1e-12, None))

    def top_losses(self, n: int) -> list[tuple[str, str, str, float, float]]:
        """(path, actual, predicted, p(predicted), loss) for the n highest-loss images."""
        loss = self.losses()
        order = np.argsort(-loss)[:n]
        return [(self.paths[i], self.classes[self.labels[i]], self.classes[self.preds[i]],
                 float(self.probs[i, self.preds[i]]), float(loss[i])) for i in order]

    def write(self, folder: Path) -> None:
        """confusion_matrix.csv, per_class.csv and predictions.csv in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "confusion_matrix.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["actual \\ predicted", *self.classes])
            for name, row in zip(self.classes, self.confusion):
                w.writerow([name, *row.tolist()])
        m = per_class_metrics(self.confusion)
        with open(folder / "per_class.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "precision", "recall", "f1", "support"])
            for i, name in enumerate(self.classes):
                w.writerow([name, f"{m['precision'][i]:.4f}", f"{m['recall'][i]:.4f}", f"{m['f1'][i]:.4f}",
                            int(m["support"][i])])
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "actual", "predicted", "confidence", "loss"])
            for p, a, pr, c, l in zip(self.paths, self.labels, self.preds, self.probs.max(1), self.losses()):
                w.writerow([p, self.classes[a], self.classes[pr], f"{c:.4f}", f"{l:.4f}"])


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
def predict_probs(model: Classifier, images: np.ndarray, runtime: Runtime, size: int, *, temperature: float = 1.0,
                  tta: TTA | None = None, batch_size: int = 64, progress: Callable[[int], None] | None = None
                  ) -> np.ndarray:
    """Softmax probabilities for uint8 squares; with `tta`, combined over its views."""
    model.eval()
    views = tta.views(size) if tta else [lambda b: eval_view(b, size)]
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: memmaps are read-only
        per_view = []
        for view in views:
            x = view(batch).to(runtime.device).contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                per_view.append(torch.softmax(model(x).float() / temperature, 1))
        p = torch.stack(per_view)
        if tta and tta.reduce == "max":
            p = p.amax(0)
            p = p / p.sum(1, keepdim=True)
        else:
            p = p.mean(0)
        out.append(p.cpu().numpy())
        if progress:
            progress(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class EvalSet:
    """A dataset decoded for a bundle: what scoring needs, loaded once so that plain and TTA can share it."""
    model: Classifier
    meta: BundleMeta
    runtime: Runtime
    images: np.ndarray
    samples: list[Sample]

    def score(self, tta: TTA | None = None) -> Evaluation:
        start = time.perf_counter()
        probs = predict_probs(self.model, self.images, self.runtime, self.meta.image_size,
                              temperature=self.meta.temperature, tta=tta)
        return Evaluation(self.meta.classes, np.array([s.label for s in self.samples]), probs,
                          [s.path for s in self.samples], time.perf_counter() - start)


def load_eval_set(bundle: str | Path, data: str, *, device: str = "auto", log=None) -> EvalSet:
    """The images of `data` whose class names the bundle knows (other classes are skipped), decoded."""
    rt = resolve_runtime(device, INFERENCE_PRECISION)
    model, meta = load_bundle(bundle, rt.device)
    ds = discover(data)
    index = {c: i for i, c in enumerate(meta.classes)}
    samples = [Sample(s.path, index[ds.classes[s.label]]) for s in ds.evaluation_samples()
               if ds.classes[s.label] in index]
    if not samples:
        raise TunevisionError(f"{data}: no images of the bundle's classes ({', '.join(meta.classes)})")
    images, bad = load_images(samples, meta.resize_size, cache_dir=None, arrays=ds.arrays)
    if log:
        for b in bad:
            log.info(f"skipped {b.path}: {b.reason}")
    return EvalSet(model, meta, rt, images, drop_skipped(samples, bad))


def evaluate_bundle(bundle: str | Path, data: str, *, tta: TTA | None = None, device: str = "auto",
                    log=None) -> Evaluation:
    """Score a bundle on a dataset whose class names match the bundle's."""
    return load_eval_set(bundle, data, device=device, log=log).score(tta)
