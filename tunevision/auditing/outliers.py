"""Outliers: images far from every other image in feature space (cleanlab's out-of-distribution scores)."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from tunevision.auditing.labels import normalised

FAR_OUT = 3.0  # Tukey's "far out": beyond the third quartile plus 3 interquartile ranges of the kNN distance


def outlier_scores(features: np.ndarray) -> np.ndarray:
    """cleanlab's OOD score per image (kNN cosine distance mapped to (0, 1]; low = atypical)."""
    from cleanlab.outlier import OutOfDistribution
    k = max(1, min(10, len(features) - 1))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints "Fitting OOD..."
        warnings.simplefilter("ignore")
        return OutOfDistribution({"k": k}).fit_score(features=normalised(features)).astype(np.float32)


def outliers(scores: np.ndarray) -> np.ndarray:
    """Indices of the far-out images, most atypical first: a rule on the data's own spread, so that a set of
    uniformly odd photos (every texture, every X-ray) does not flag a fixed share of itself."""
    if len(scores) < 8:
        return np.zeros(0, int)
    distance = -np.log(np.clip(scores, 1e-12, 1))
    q1, q3 = np.percentile(distance, [25, 75])
    far = np.nonzero(distance > q3 + FAR_OUT * (q3 - q1))[0]
    return far[np.argsort(-distance[far])]
