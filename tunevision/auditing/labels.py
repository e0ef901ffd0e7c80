"""Likely label errors: out-of-fold probabilities of K logistic-regression heads on the frozen features, ranked by
cleanlab's confident learning (`find_label_issues`), the well-kept implementation of it."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssue:
    index: int
    suggested: int  # the most likely other class
    score: float    # cleanlab's label quality (self-confidence): low = likely wrong


def normalised(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length: the cosine geometry the heads and the duplicate search both use."""
    x = np.asarray(features, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def logistic_head(C: float = 1.0, warm: bool = False):
    """The audit's heads: L2 strength C=1 on unit-length features (on flowers5 C=1/10/100 gave 69.5/70.5/70.5 %
    out-of-fold accuracy and the same flags, and C=1 fits in half the time)."""
    # sklearn's import costs about a second: only when an audit runs
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=300, warm_start=warm)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it, as in a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                      start=None, views: Sequence[np.ndarray] = (), workers: int | None = None) -> np.ndarray:
    """(N, classes) probabilities, each row from a head that did not see that image. `views`: features of other
    views of the same images (augmented crops, in the same order): each head then trains on every view of its
    images and a held-out image's row is the mean over its views. Against seeded flips, the eval view and one
    augmented view raised hymenoptera's precision from 0.76 to 0.87 at the same recall (30 flip seeds) and
    caltech101-25's recall from 0.93 to 0.96 (3), flowers5 unchanged (`benchmarks/audit.py`).
    `start`: a head already fitted on most of these images (the audit's probe, on the training split), from which
    each fold's head starts when it has the same classes: on flowers5 the folds then take 33-47 L-BFGS steps
    instead of 53-72 to the same optimum within sklearn's tolerance (probabilities within 0.02); without it and
    without views, the same probabilities as sklearn's `cross_val_predict`. `workers`: folds fitted at once (default:
    the cores this process may use)."""
    from sklearn.model_selection import StratifiedKFold
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1 if len(labels) else 0
    smallest = np.bincount(labels).min(initial=len(labels)) if len(labels) else 0
    k = max(2, min(folds, int(smallest) or 2, len(labels)))
    xs = [normalised(v) for v in (features, *views)]
    probs = np.zeros((len(labels), classes), np.float32)

    def fold(split: tuple[np.ndarray, np.ndarray]) -> None:
        fit_on, held = split
        head = logistic_head(warm=start is not None)
        if start is not None and len(np.unique(labels[fit_on])) == classes == len(start.classes_):
            head.coef_, head.intercept_ = start.coef_.copy(), start.intercept_.copy()
        head.fit(np.concatenate([x[fit_on] for x in xs]), np.tile(labels[fit_on], len(xs)))
        probs[np.ix_(held, head.classes_)] = np.mean([head.predict_proba(x[held]) for x in xs], axis=0)
    with warnings.catch_warnings():  # classes thinner than K: sklearn warns and still gives every row
        warnings.simplefilter("ignore")
        # the folds in threads, each on one BLAS thread (run_audit's limit): L-BFGS spends its time in NumPy,
        # which lets go of the GIL; flowers5's five heads with a view 5.1 s -> 3.0 s on 2 cores, same probabilities
        with ThreadPoolExecutor(max(1, min(k, workers or usable_cores()))) as pool:
            list(pool.map(fold, StratifiedKFold(k, shuffle=True, random_state=seed).split(xs[0], labels)))
    return probs


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> list[LabelIssue]:
    """The images whose given label confident learning doubts, most doubtful first: as many as cleanlab's
    `find_label_issues` counts, taken in order of cleanlab's label quality (self-confidence) over the whole set."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or probs.shape[1] < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab's default forks a multiprocessing Pool, and a fork of a process whose torch threads
        # hold a lock can hang for good (seen in the test suite); per-class pruning is cheap in one process
        # filter_by "both" (pruned by noise rate and by class) counted the issues best against seeded flips
        # (benchmarks/audit.py; means over the seeds): for caltech101-25's 86 flips the default
        # `prune_by_noise_rate` counted 139, "both" 97; for hymenoptera's 10, `num_label_issues` 7, "both" 11
        count = int(cleanlab_issues(labels, probs, filter_by="both", n_jobs=1).sum())
        scores = get_label_quality_scores(labels, probs)
    # which ones: the lowest label quality over the whole set, not the pruning's picks within each class. Against
    # the same flips: caltech101-25 precision/recall 0.594/0.671 -> 0.834/0.934 (3 seeds), flowers5 beyond its own
    # doubts 0.618/0.754 -> 0.671/0.769 (2), hymenoptera the same (10)
    ranked = np.argsort(scores, kind="stable")[:count]
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1
    return [LabelIssue(int(i), int(others[i].argmax()), float(scores[i])) for i in ranked]


def out_of_fold_multilabel(features: np.ndarray, targets: np.ndarray, folds: int = 5, seed: int = 0,
                           views: Sequence[np.ndarray] = (), workers: int | None = None) -> np.ndarray:
    """(N, labels) probabilities for multi-label data (`targets` N x L of 0/1), each row from heads that did not
    see that image: one logistic regression per label (a label constant within a fold's images predicts that
    constant), trained on every view like `out_of_fold_probs`, a held-out row the mean over its views."""
    from sklearn.model_selection import KFold
    targets = np.asarray(targets, np.int64)
    k = max(2, min(folds, len(targets)))
    xs = [normalised(v) for v in (features, *views)]
    probs = np.zeros(targets.shape, np.float32)

    def fold(split: tuple[np.ndarray, np.ndarray]) -> None:
        fit_on, held = split
        x = np.concatenate([v[fit_on] for v in xs])
        for j in range(targets.shape[1]):
            y = np.tile(targets[fit_on, j], len(xs))
            if y.min() == y.max():
                probs[held, j] = float(y[0])
                continue
            head = logistic_head().fit(x, y)
            probs[held, j] = np.mean([head.predict_proba(v[held])[:, 1] for v in xs], axis=0)
    with ThreadPoolExecutor(max(1, min(k, workers or usable_cores()))) as pool:
        list(pool.map(fold, KFold(k, shuffle=True, random_state=seed).split(xs[0])))
    return probs


def find_multilabel_issues(targets: np.ndarray, probs: np.ndarray) -> list[tuple[int, tuple[int, ...], float]]:
    """(image, the labels the heads suggest, label quality) for the images whose label set cleanlab's multi-label
    confident learning doubts, as many as it counts, lowest label quality first."""
    from cleanlab.multilabel_classification.filter import (
        find_label_issues as cleanlab_issues,
    )
    from cleanlab.multilabel_classification.rank import get_label_quality_scores
    targets = np.asarray(targets)
    # a label on every image or on none (a detector's one class of objects) has nothing to doubt, and cleanlab
    # refuses a column without both values: the checks read the labels that vary
    varying = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
    if len(targets) < 2 or not varying:
        return []

    def suggested(i: int) -> tuple[int, ...]:
        return tuple(np.nonzero(probs[i] >= 0.5)[0].tolist())
    if len(varying) == 1:  # one label that varies: a two-class problem
        j = varying[0]
        issues = find_label_issues(targets[:, j], np.stack([1 - probs[:, j], probs[:, j]], 1))
        return [(i.index, suggested(i.index), i.score) for i in issues]
    given = [np.nonzero(row)[0].tolist() for row in targets[:, varying]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        count = int(cleanlab_issues(given, probs[:, varying], n_jobs=1).sum())  # n_jobs=1: no fork (see above)
        scores = get_label_quality_scores(given, probs[:, varying])
    ranked = np.argsort(scores, kind="stable")[:count]
    return [(int(i), suggested(int(i)), float(scores[i])) for i in ranked]
