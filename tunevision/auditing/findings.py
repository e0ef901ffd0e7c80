"""Every check of the audit over one dataset, as rows a user can act on (audit.csv) and a summary (audit.json)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from tunevision.auditing.duplicates import (
    CANDIDATE,
    FINE,
    FINE_MATCH,
    PIXEL_MATCH,
    SMALL,
    duplicate_pairs,
)
from tunevision.auditing.labels import (
    find_label_issues,
    find_multilabel_issues,
    logistic_head,
    normalised,
    out_of_fold_multilabel,
    out_of_fold_probs,
)
from tunevision.auditing.neighbours import NEIGHBOURS, Neighbours, nearest
from tunevision.auditing.outliers import outlier_scores, outliers
from tunevision.auditing.quality import odd_images

COLUMNS = ["path", "issue", "score", "given", "suggested", "other", "action"]


@dataclass
class Finding:
    index: int       # into the audited images (train first, then val)
    issue: str       # label, duplicate, leakage, outlier, dark, light, blurry, low information, odd size
    score: float
    given: str = ""
    suggested: str = ""
    other: int = -1  # a duplicate's partner
    action: str = "keep"  # what `--fixes` does with the image; the user edits it (keep, drop, relabel:NAME)


@dataclass
class Audited:
    """The images under audit: train then val, with their labels (-1 for none), eval-view features, own sizes and
    the features of augmented views of the same images (for the label heads alone)."""
    paths: list[str]
    splits: list[str]
    labels: np.ndarray
    classes: list[str]
    features: np.ndarray
    image_sets: Sequence = ()  # uint8 square arrays whose concatenation is the images, in order
    sizes: list[tuple[int, int] | None] = field(default_factory=list)
    views: Sequence[np.ndarray] = ()
    sides: np.ndarray | None = None  # each image's own shorter side in px (0: unknown), for the duplicate search
    label_sets: np.ndarray | None = None  # multi-label data: (N, classes) 0/1, every label of each image

    def split_index(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], int)


def probe_head(a: Audited):
    """A logistic-regression head on the training images' features (None without two classes or validation
    images): the leakage line's probe, and where the K-fold heads start."""
    train, val = a.split_index("train"), a.split_index("val")
    if a.label_sets is not None or len(np.unique(a.labels[train])) < 2 or not len(val):
        return None
    return logistic_head().fit(normalised(a.features)[train], a.labels[train])


def probe_accuracy(a: Audited, probe, val_drop: set[int]) -> tuple[float, float]:
    """Validation accuracy of the probe on every validation image, and without those that duplicate a training
    image (the leakage's effect on the score)."""
    val = a.split_index("val")
    right = probe.predict(normalised(a.features)[val]) == a.labels[val]
    kept = np.array([i not in val_drop for i in val])
    return float(right.mean()), float(right[kept].mean()) if kept.any() else float("nan")


def label_findings(a: Audited, seed: int, probe=None) -> list[Finding]:
    """Label issues among the labelled images, over the classes that have images (a class emptied by --fixes or
    by unreadable files has no column in the heads' output), mapped back to the data's class names. The K-fold
    heads start from `probe` when it knows the same classes, and read the augmented views beside the eval view."""
    if a.label_sets is not None:
        return multilabel_findings(a, seed)
    index = np.nonzero(a.labels >= 0)[0]
    present, compact = np.unique(a.labels[index], return_inverse=True)
    if len(index) < 4 or len(present) < 2:
        return []
    same = probe is not None and np.array_equal(probe.classes_, present)  # then its rows are the compact classes'
    probs = out_of_fold_probs(a.features[index], compact, seed=seed, start=probe if same else None,
                              views=[v[index] for v in a.views])
    return [Finding(int(index[i.index]), "label", round(i.score, 4), a.classes[present[compact[i.index]]],
                    a.classes[present[i.suggested]]) for i in find_label_issues(compact, probs)]


def multilabel_findings(a: Audited, seed: int) -> list[Finding]:
    """Label-set issues of multi-label data: given and suggested are `;`-joined names (empty: none of the labels),
    and `relabel:a;b` in audit.csv sets an image's labels to those."""
    if len(a.label_sets) < 4:
        return []
    probs = out_of_fold_multilabel(a.features, a.label_sets, seed=seed, views=a.views)

    def names(indices) -> str:
        return ";".join(a.classes[j] for j in indices)
    return [Finding(i, "label", round(score, 4), names(np.nonzero(a.label_sets[i])[0]), names(suggested))
            for i, suggested, score in find_multilabel_issues(a.label_sets, probs)]


def duplicate_findings(a: Audited, near: Neighbours) -> list[Finding]:
    """One row per pair, on its second image: within a split `duplicate`, across splits `leakage`."""
    rows = []
    for p in duplicate_pairs(_Concat(a.image_sets), a.features, near, a.sides):
        issue = "duplicate" if a.splits[p.first] == a.splits[p.second] else "leakage"
        rows.append(Finding(p.second, issue, round(p.similarity, 4), suggested="drop", other=p.first))
    return rows


def run_audit(a: Audited, *, seed: int = 0) -> tuple[list[Finding], dict]:
    """All checks; returns the findings and a summary with counts and the leakage line."""
    import sklearn.linear_model  # noqa: F401  (loads SciPy's own OpenBLAS, which the limit reaches only if loaded)
    from threadpoolctl import threadpool_limits
    # BLAS on one thread: beside torch's idle OpenMP workers, NumPy's two OpenBLAS threads made sklearn's K-fold
    # heads 4x slower (12.2 s against 3.2 s on flowers5) and the whole audit 13.2 s against 10.4 s. The folds then
    # run in threads of their own (labels.out_of_fold_probs)
    with threadpool_limits(1, user_api="blas"):
        return _run_audit(a, seed)


def _run_audit(a: Audited, seed: int) -> tuple[list[Finding], dict]:
    near = nearest(a.features)  # the duplicates' candidates and the outliers' distances alike
    probe = probe_head(a)
    findings = label_findings(a, seed, probe) + duplicate_findings(a, near)
    scores = outlier_scores(a.features, near) if len(a.features) > 1 else np.ones(len(a.features))
    findings += [Finding(int(i), "outlier", round(float(scores[i]), 4)) for i in outliers(scores)]
    findings += [Finding(o.index, o.issue, o.score) for o in odd_images(_Concat(a.image_sets), a.sizes)]
    leaked = {f.index if a.splits[f.index] == "val" else f.other for f in findings if f.issue == "leakage"}
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.issue] = counts.get(f.issue, 0) + 1
    summary = {"images": len(a.paths), "issues": counts,
               "near_rule": {"feature_cosine": CANDIDATE, "pixel_match": PIXEL_MATCH, "neighbours": NEIGHBOURS,
                             "images_under_px": SMALL, "also_at_px": FINE, "also_match": FINE_MATCH},
               "leaked_val": sorted(a.paths[i] for i in leaked)}
    if probe is not None:
        accuracy = probe_accuracy(a, probe, leaked)
        summary["probe_val_acc"], summary["probe_val_acc_without_leaked"] = (round(v, 4) for v in accuracy)
    return findings, summary


def rows(a: Audited, findings: list[Finding]) -> list[dict]:
    """audit.csv's rows: paths in place of indices."""
    out = []
    for f in findings:
        row = {**asdict(f), "path": a.paths[f.index], "other": a.paths[f.other] if f.other >= 0 else ""}
        out.append({k: row[k] for k in COLUMNS})
    return out


class _Concat:
    """Several image arrays read as one, batch by batch (the checks slice contiguous ranges)."""

    def __init__(self, parts: Sequence) -> None:
        self.parts = [p for p in parts if len(p)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, _ = index.indices(len(self))
            chunks = [np.asarray(p[max(lo - s, 0):max(hi - s, 0)]) for p, s in zip(self.parts, self.starts)]
            chunks = [c for c in chunks if len(c)]
            return np.concatenate(chunks) if chunks else np.zeros((0, 1, 1, 3), np.uint8)
        part = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.parts[part][index - self.starts[part]]
