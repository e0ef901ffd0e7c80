"""Temperature scaling (Guo et al. 2017) and expected calibration error, as pure functions."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T); accuracy is unchanged by construction."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().float(), labels.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    # A perfectly separated validation set drives T towards 0 (ever sharper is ever better NLL there);
    # the bound keeps a few lucky validation images from making the deployed model absurdly confident.
    return float(log_t.detach().exp().clamp(0.25, 10.0))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: (mean confidence, accuracy, count)."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(idx, conf, bins) / count
        acc = np.bincount(idx, (pred == labels).astype(float), bins) / count
    return np.nan_to_num(mean_conf), np.nan_to_num(acc), count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    mean_conf, acc, count = reliability(probs, labels, bins)
    return float((np.abs(mean_conf - acc) * count).sum() / max(count.sum(), 1))
