"""What a classifier's training minimises and its validation maximises, for one label per image or any number.

The targets say which: int64 class indices (N,) are single-label (softmax, cross-entropy, accuracy); float 0/1
rows (N, labels) are multi-label (sigmoid, binary cross-entropy, macro mAP). Loops, the training step, the LR
range test and calibration ask `objective_for(targets)` and never test for the task themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve (sklearn's average_precision_score: precision at each positive, in
    order of decreasing score); NaN for a label with no positive."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / n_pos)


def binary_cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities against 0/1 targets (clipped, so 0 and 1 stay finite)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())


def macro_map(probs: np.ndarray, targets: np.ndarray) -> float:
    aps = [average_precision(probs[:, k], targets[:, k] > 0.5) for k in range(targets.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else 0.0


@dataclass(frozen=True)
class SingleLabel:
    score_name = "acc"  # what the epoch records' val_acc holds

    @staticmethod
    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, smoothing: float) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=smoothing)

    @staticmethod
    def probs(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), 1)

    @staticmethod
    def hits(logits: torch.Tensor, y: torch.Tensor) -> float:
        """Correct images in a batch (summed into the training accuracy)."""
        return float((logits.argmax(1) == y).sum())

    @staticmethod
    def val_metrics(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        return loss, float((probs.argmax(1) == y).mean())

    @staticmethod
    def weights(y: torch.Tensor, n: int) -> torch.Tensor:
        """n / (C * n_c): each class weighs the same in the loss (sklearn's 'balanced'); absent classes get 0."""
        counts = torch.bincount(y, minlength=n).float()
        return torch.where(counts > 0, len(y) / (n * counts.clamp(min=1)), torch.zeros(()))


@dataclass(frozen=True)
class MultiLabel:
    score_name = "mAP"

    @staticmethod
    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, smoothing: float) -> torch.Tensor:
        target = target * (1 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=weight)

    @staticmethod
    def probs(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    @staticmethod
    def hits(logits: torch.Tensor, y: torch.Tensor) -> float:
        """Images whose every label is right at 0.5 (summed into the training exact-match rate)."""
        return float(((logits > 0) == (y > 0.5)).all(1).sum())

    @staticmethod
    def val_metrics(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return binary_cross_entropy(probs, y), macro_map(probs, y)

    @staticmethod
    def weights(y: torch.Tensor, n: int) -> torch.Tensor:
        """pos_weight = negatives / positives per label (capped at 50): a rare label's positives weigh as much as
        its negatives."""
        pos = y.sum(0)
        return ((len(y) - pos) / pos.clamp(min=1)).clamp(max=50.0)


def objective_for(targets: torch.Tensor) -> SingleLabel | MultiLabel:
    return MultiLabel() if targets.dim() == 2 else SingleLabel()
