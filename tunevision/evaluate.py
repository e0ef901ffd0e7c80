"""Metrics as pure functions on labels and probabilities, and `evaluate_bundle` for a folder of images."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import eval_view
from .bundle import load_bundle
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


def tta_views(size: int, n_crops: int = 0) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Centre crop, its mirror, and `n_crops` fixed corner crops: deterministic, so TTA is reproducible."""
    views = [lambda b: eval_view(b, size), lambda b: eval_view(b, size).flip(3)]
    corners = [(0, 0), (1, 1), (0, 1), (1, 0)][:n_crops]
    for fy, fx in corners:
        def crop(b: torch.Tensor, fy=fy, fx=fx) -> torch.Tensor:
            s = b.shape[1] - size
            return eval_view(b[:, fy * s: fy * s + size, fx * s: fx * s + size], size)
        views.append(crop)
    return views


@torch.no_grad()
def predict_probs(model: Classifier, images: np.ndarray, runtime: Runtime, size: int, *, temperature: float = 1.0,
                  tta: bool = False, batch_size: int = 64, progress: Callable[[int], None] | None = None
                  ) -> np.ndarray:
    """Softmax probabilities for uint8 squares; with `tta`, averaged over `tta_views`."""
    model.eval()
    views = tta_views(size, n_crops=2) if tta else [lambda b: eval_view(b, size)]
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size]))  # copy: memmaps are read-only
        p = 0
        for view in views:
            x = view(batch).to(runtime.device).contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                p = p + torch.softmax(model(x).float() / temperature, 1)
        out.append((p / len(views)).cpu().numpy())
        if progress:
            progress(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def evaluate_bundle(bundle: str | Path, data: str, *, tta: bool = False, device: str = "auto",
                    log=None) -> Evaluation:
    """Score a bundle on a dataset whose class names match the bundle's (other classes are skipped)."""
    rt = resolve_runtime(device, INFERENCE_PRECISION)
    model, meta = load_bundle(bundle, rt.device)
    ds = discover(data)
    index = {c: i for i, c in enumerate(meta.classes)}
    samples = [Sample(s.path, index[ds.classes[s.label]]) for s in ds.evaluation_samples()
               if ds.classes[s.label] in index]
    if not samples:
        raise TunevisionError(f"{data}: no images of the bundle's classes ({', '.join(meta.classes)})")
    images, bad = load_images(samples, meta.resize_size, cache_dir=None, arrays=ds.arrays)
    samples = drop_skipped(samples, bad)
    if log:
        for b in bad:
            log.info(f"skipped {b.path}: {b.reason}")
    probs = predict_probs(model, images, rt, meta.image_size, temperature=meta.temperature, tta=tta)
    return Evaluation(meta.classes, np.array([s.label for s in samples]), probs, [s.path for s in samples])
