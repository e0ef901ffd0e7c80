"""Multi-label classification's own parts: per-label calibration and thresholds chosen on validation, and its
metrics (macro mAP; micro and macro F1 at the thresholds; per label precision, recall, F1, AP and support;
exact match; Hamming loss). Training is classification's, with the objective the targets select
(engine/objective.py)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunevision.core.atomic import atomic_write
from tunevision.engine.objective import average_precision, binary_cross_entropy

TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 49))  # the grid each label's temperature is chosen on


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def fit_label_temperatures(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One temperature per label minimising its validation binary cross-entropy (a 1-D search on a log grid; T = 1
    stays when nothing beats it). Ranking, and so AP, are unchanged by construction."""
    out = np.ones(logits.shape[1])
    for k in range(logits.shape[1]):
        y = targets[:, k]
        if y.min() == y.max():  # one-sided labels carry no calibration signal
            continue
        losses = [binary_cross_entropy(sigmoid(logits[:, k] / t), y) for t in TEMPERATURES]
        out[k] = TEMPERATURES[int(np.argmin(losses))]
    return out


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The probability threshold that maximises F1 on these scores (midway between neighbouring scores, so that
    nearby new images fall the same way); 0.5 for a label without positives."""
    if not positive.any():
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], positive[order].astype(np.float64)
    tp = np.cumsum(hits)
    f1 = 2 * tp / (np.arange(1, len(s) + 1) + positive.sum())
    i = int(np.argmax(f1))
    return float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i] * 0.999)


def choose_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.array([best_f1_threshold(probs[:, k], targets[:, k] > 0.5) for k in range(probs.shape[1])])


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def _no_nan(value):
    return None if isinstance(value, float) and np.isnan(value) else value


@dataclass
class MultiLabelEvaluation:
    classes: list[str]
    targets: np.ndarray      # (N, L) 0/1
    probs: np.ndarray        # (N, L) calibrated
    paths: list[str]
    thresholds: np.ndarray   # (L,)
    seconds: float = 0.0
    note: str = ""
    multilabel = True

    @property
    def predicted(self) -> np.ndarray:
        return self.probs >= self.thresholds

    @property
    def ap(self) -> np.ndarray:
        return np.array([average_precision(self.probs[:, k], self.targets[:, k] > 0.5)
                         for k in range(len(self.classes))])

    @property
    def map(self) -> float:
        ap = self.ap
        return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0

    def per_label(self) -> list[dict]:
        y, p, out = self.targets > 0.5, self.predicted, []
        for k, name in enumerate(self.classes):
            tp, fp, fn = float((y[:, k] & p[:, k]).sum()), float((~y[:, k] & p[:, k]).sum()), float(
                (y[:, k] & ~p[:, k]).sum())
            precision, recall, f1 = _prf(tp, fp, fn)
            out.append({"label": name, "precision": precision, "recall": recall, "f1": f1, "ap": float(self.ap[k]),
                        "support": int(y[:, k].sum()), "threshold": float(self.thresholds[k])})
        return out

    @property
    def micro_f1(self) -> float:
        y, p = self.targets > 0.5, self.predicted
        return _prf(float((y & p).sum()), float((~y & p).sum()), float((y & ~p).sum()))[2]

    @property
    def macro_f1(self) -> float:
        return float(np.mean([r["f1"] for r in self.per_label()]))

    @property
    def exact_match(self) -> float:
        return float((self.predicted == (self.targets > 0.5)).all(1).mean()) if len(self.targets) else 0.0

    @property
    def hamming_loss(self) -> float:
        return float((self.predicted != (self.targets > 0.5)).mean()) if len(self.targets) else 0.0

    @property
    def accuracy(self) -> float:  # the headline number where a classifier shows its accuracy
        return self.map

    def headline(self) -> str:
        return (f"mAP {self.map:.4f}, micro F1 {self.micro_f1:.4f}, macro F1 {self.macro_f1:.4f}, exact match "
                f"{self.exact_match:.2%}, Hamming loss {self.hamming_loss:.4f}")

    def summary(self) -> dict:
        return {"final_val_map": self.map, "micro_f1": self.micro_f1, "macro_f1": self.macro_f1,
                "exact_match": self.exact_match, "hamming_loss": self.hamming_loss}

    def __repr__(self) -> str:
        width = max([len(c) for c in self.classes] + [5])
        lines = [f"Evaluation: {len(self.targets)} images, {self.headline()}" + (f" ({self.note})" if self.note else ""),
                 f"{'label':<{width}}  precision  recall     f1     AP  support  threshold"]
        lines += [f"{r['label']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['ap']:5.3f}  "
                  f"{r['support']:7d}  {r['threshold']:9.3f}" for r in self.per_label()]
        return "\n".join(lines)

    def calibration_line(self, meta, bce: tuple[float, float]) -> str:
        temps = meta.extra.get("temperatures", [])
        return (f"calibration: a temperature per label ({', '.join(f'{t:.2f}' for t in temps)}), binary "
                f"cross-entropy {bce[0]:.4f} -> {bce[1]:.4f}; thresholds chosen for F1 per label")

    def per_class_lines(self) -> list[str]:
        return [f"  {r['label']:>20s}  precision {r['precision']:.3f}  recall {r['recall']:.3f}  f1 {r['f1']:.3f}  "
                f"AP {r['ap']:.3f}  n={r['support']}  threshold {r['threshold']:.2f}" for r in self.per_label()]

    def cooccurrence(self) -> np.ndarray:
        """(L, L): how often true label i comes with predicted label j (the diagonal: hits per label)."""
        y, p = (self.targets > 0.5).astype(int), self.predicted.astype(int)
        return y.T @ p

    def worst(self, k: int, kind: str, n: int = 4) -> list[tuple[str, float]]:
        """(path, probability) of label k's most confident false positives ('fp') or least confident false
        negatives ('fn')."""
        y, pr = self.targets[:, k] > 0.5, self.probs[:, k]
        wrong = np.flatnonzero(~y & (pr >= self.thresholds[k])) if kind == "fp" else np.flatnonzero(
            y & (pr < self.thresholds[k]))
        order = wrong[np.argsort(-pr[wrong] if kind == "fp" else pr[wrong])][:n]
        return [(self.paths[i], float(pr[i])) for i in order]

    def write(self, folder: Path) -> None:
        """metrics.json, per_label.csv and predictions.csv in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        # a label with no positive image has no AP (NaN): null, as JSON has no NaN
        rows = [{k: _no_nan(v) for k, v in r.items()} for r in self.per_label()]
        atomic_write(folder / "metrics.json", lambda p: p.write_text(json.dumps(
            {**{k: _no_nan(v) for k, v in self.summary().items()}, "per_label": rows}, indent=2)))
        with open(folder / "per_label.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["label", "precision", "recall", "f1", "ap", "support", "threshold"])
            w.writeheader()
            w.writerows(self.per_label())
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "actual", "predicted", *[f"p_{c}" for c in self.classes]])
            for path, y, p, pr in zip(self.paths, self.targets > 0.5, self.predicted, self.probs):
                w.writerow([path, ";".join(c for c, v in zip(self.classes, y) if v),
                            ";".join(c for c, v in zip(self.classes, p) if v), *[f"{v:.4f}" for v in pr]])


def calibrate(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(temperatures, thresholds, calibrated probabilities) from validation logits."""
    temperatures = fit_label_temperatures(logits, targets)
    probs = sigmoid(logits / temperatures)
    return temperatures, choose_thresholds(probs, targets), probs


def pr_curve(scores: np.ndarray, positive: np.ndarray, threshold: float
             ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(recall, precision) at every cut of the ranking, and the point the threshold picks."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    tp = np.cumsum(hits)
    recall = tp / max(1.0, positive.sum())
    precision = tp / np.arange(1, len(hits) + 1)
    chosen = scores >= threshold
    tp_t = float((chosen & positive).sum())
    at = (tp_t / max(1.0, positive.sum()), tp_t / chosen.sum() if chosen.any() else 1.0)
    return np.concatenate([[0.0], recall]), np.concatenate([[1.0], precision]), at


def read_evaluation(folder: Path, classes: list[str], thresholds: list[float]) -> MultiLabelEvaluation | None:
    """The validation scores a multi-label run wrote (eval/predictions.csv), or None."""
    path = Path(folder) / "predictions.csv"
    if not path.is_file():
        return None
    rows = list(csv.DictReader(open(path)))
    targets = np.array([[c in r["actual"].split(";") for c in classes] for r in rows], dtype=np.float32)
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float32)
    return MultiLabelEvaluation(classes, targets.reshape(-1, len(classes)), probs.reshape(-1, len(classes)),
                                [r["path"] for r in rows], np.asarray(thresholds), note=f"validation split ({folder})")
