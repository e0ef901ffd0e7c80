"""Each image's nearest others by feature cosine, found once for the whole audit: the duplicate search reads its
candidates from them and the outlier scores their distances."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tunevision.auditing.labels import normalised

NEIGHBOURS = 16  # per image: the duplicate search's candidates (on 10,000 MNIST digits nearly every pair is close)
BLOCK = 2048     # rows compared at a time, so that 50,000 images need no N x N matrix


@dataclass(frozen=True)
class Neighbours:
    similarity: np.ndarray  # (N, k) float32 feature cosine, most similar first
    index: np.ndarray       # (N, k) int64: which image


def nearest(features: np.ndarray, k: int = NEIGHBOURS) -> Neighbours:
    """The `k` most similar other images of each image (fewer when there are fewer images)."""
    x = torch.from_numpy(normalised(features))
    k = max(0, min(k, len(x) - 1))
    sims, index = [], []
    for start in range(0, len(x) if k else 0, BLOCK):
        block = x[start:start + BLOCK] @ x.T
        rows = torch.arange(len(block))
        block[rows, start + rows] = -math.inf  # not its own neighbour
        best, near = block.topk(k, dim=1)  # torch's topk: a tenth of numpy's argpartition over these rows
        sims.append(best)
        index.append(near)
    if not sims:
        return Neighbours(np.zeros((len(x), 0), np.float32), np.zeros((len(x), 0), np.int64))
    return Neighbours(torch.cat(sims).numpy(), torch.cat(index).numpy())


class KnownNeighbours:
    """The first `k` of these neighbours as the fitted sklearn `NearestNeighbors` (cosine) that cleanlab's
    outlier scores take as `knn`: cleanlab's own search compares every pair twice with NumPy on one thread
    (1.5 s on flowers5's 4,317 images), where the audit has already found them."""
    metric = "cosine"

    def __init__(self, near: Neighbours, k: int) -> None:
        self.near, self.n_neighbors = near, k

    def kneighbors(self, X=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803 (sklearn's name)
        """Distances and indices of the audited images' own neighbours (cleanlab asks only for those)."""
        k = self.n_neighbors
        return (1.0 - self.near.similarity[:, :k]).clip(0, 2).astype(np.float64), self.near.index[:, :k]
