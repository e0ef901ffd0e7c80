"""Exact and near duplicates: the same decoded pixels, or close features whose thumbnails also match."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tunevision.auditing.neighbours import Neighbours, nearest

# Measured on flowers5 with 20 injected copies (benchmarks/audit.py): a copy cropped by 6 % a side keeps only 0.86
# feature cosine with its original, while 7,940 distinct pairs pass 0.85. Pixels tell them apart: on 16 px grey
# thumbnails, matched over centre crops, every copy (exact, resized, JPEG q60, cropped) scores >= 0.995 and the
# distinct pairs that pass 0.99 were the same photos filed twice.
CANDIDATE = 0.80      # feature cosine at which a pair is compared pixel by pixel
PIXEL_MATCH = 0.99    # normalised correlation of the thumbnails for a near duplicate
THUMB = 16
# An image whose own shorter side is this small has no more detail than the 16 px thumbnails: MNIST's distinct
# handwritten 1s (28 px) correlate 0.99-0.997 there (109 pairs reported, the 16 looked at all distinct digits). Its
# pairs must also match at 32 px, where those 1s reach 0.9935 at most and a copy of the same pixels ~1; a resized
# copy of so small an image is then missed, as it cannot be told from a look-alike
SMALL, FINE, FINE_MATCH = 64, 32, 0.995
SCALES = (1.0, 0.94, 0.88, 0.82)  # centre crops tried against the other image's whole square
PAIR_BLOCK = 16384    # pairs compared at a time: a few MB of thumbnails gathered


@dataclass(frozen=True)
class Pair:
    first: int
    second: int
    similarity: float
    kind: str  # exact | near


def pixel_hashes(images) -> list[str]:
    """A hash of each decoded square: byte-identical files and re-saves that decode the same collide. Every 8th
    row is hashed first and only squares that share that hash are hashed whole: equal hashes still mean equal
    pixels, at an eighth of the bytes read (hashing 1.1 GB of flowers5 squares took 0.6 s)."""
    def digest(a: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
    quick = [digest(np.asarray(images[i])[::8]) for i in range(len(images))]
    shared = Counter(quick)
    return [digest(np.asarray(images[i])) if shared[q] > 1 else q for i, q in enumerate(quick)]


def exact_pairs(hashes: list[str]) -> list[Pair]:
    first: dict[str, int] = {}
    pairs = []
    for i, h in enumerate(hashes):
        if h in first:
            pairs.append(Pair(first[h], i, 1.0, "exact"))
        else:
            first[h] = i
    return pairs


def candidate_pairs(near: Neighbours, threshold: float = CANDIDATE) -> list[tuple[int, int, float]]:
    """Each image's nearest others (`near`) above `threshold` feature cosine, as (i < j) pairs: the cap on
    neighbours keeps a set of near-identical pictures (digits, product shots) from asking for every pair."""
    found: dict[tuple[int, int], float] = {}
    rows, cols = np.nonzero(near.similarity >= threshold)
    for r, c, v in zip(rows.tolist(), near.index[rows, cols].tolist(), near.similarity[rows, cols].tolist()):
        found[(min(r, c), max(r, c))] = v
    return sorted((i, j, v) for (i, j), v in found.items())


def thumbnails(images, index: np.ndarray, scales: tuple[float, ...] = SCALES, chunk: int = 512, thumb: int = THUMB
               ) -> dict[float, np.ndarray]:
    """Per scale, zero-mean, unit-length `thumb` x `thumb` grey thumbnails of the centre `scale` of each square. Each
    square is shrunk once, as uint8 (torch's vectorised antialiased path, 6x the float one), to 4 x `thumb` px, and
    the centre crops are cut from that: one pass over the full-size pixels instead of one per scale (1.6 s -> 0.3 s
    on flowers5); rounding a 16 px thumbnail to 1/255 moves a correlation by ~1e-5."""
    out: dict[float, list[np.ndarray]] = {s: [] for s in scales}
    side = 4 * thumb
    for lo in range(0, len(index), chunk):
        x = torch.from_numpy(np.stack([np.asarray(images[int(i)]) for i in index[lo:lo + chunk]])).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        for scale in scales:
            crop = max(1, int(round(side * scale)))
            off = (side - crop) // 2
            small = F.interpolate(x[:, :, off:off + crop, off:off + crop], size=(thumb, thumb), mode="bilinear",
                                  antialias=True, align_corners=False).float()
            grey = (0.299 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]).flatten(1)
            grey = grey - grey.mean(1, keepdim=True)
            out[scale].append((grey / grey.norm(dim=1, keepdim=True).clamp_min(1e-3)).numpy())
    return {s: np.concatenate(v) if v else np.zeros((0, thumb * thumb), np.float32) for s, v in out.items()}


def pixel_match(images, pairs: list[tuple[int, int, float]], thumb: int = THUMB) -> np.ndarray:
    """Per pair, the best thumbnail correlation of either image's centre crops against the other's square."""
    if not pairs:
        return np.zeros(0)
    index = np.unique([i for p in pairs for i in p[:2]])
    where = {int(i): k for k, i in enumerate(index)}
    thumbs = thumbnails(images, index, thumb=thumb)
    a = np.array([where[p[0]] for p in pairs])
    b = np.array([where[p[1]] for p in pairs])
    best = np.full(len(pairs), -1.0)
    for lo in range(0, len(pairs), PAIR_BLOCK):
        ai, bi, out = a[lo:lo + PAIR_BLOCK], b[lo:lo + PAIR_BLOCK], best[lo:lo + PAIR_BLOCK]
        for s in SCALES:
            np.maximum(out, np.einsum("ij,ij->i", thumbs[s][ai], thumbs[1.0][bi]), out=out)
            np.maximum(out, np.einsum("ij,ij->i", thumbs[s][bi], thumbs[1.0][ai]), out=out)
    return best


def near_pairs(images, near: Neighbours, candidate: float = CANDIDATE, match: float = PIXEL_MATCH,
               small: np.ndarray | None = None) -> list[Pair]:
    """Pairs close in feature space whose pixels also match: a copy resized, recompressed or slightly cropped.
    `small`: per image, whether its own resolution is under SMALL (its pairs must also match at FINE px)."""
    pairs = candidate_pairs(near, candidate)
    scores = pixel_match(images, pairs)
    keep = scores >= match
    tiny = [k for k, (i, j, _) in enumerate(pairs) if keep[k] and small is not None and (small[i] or small[j])]
    if tiny:
        keep[tiny] = pixel_match(images, [pairs[k] for k in tiny], thumb=FINE) >= FINE_MATCH
    return [Pair(i, j, round(float(m), 4), "near") for (i, j, _), m, kept in zip(pairs, scores, keep) if kept]


def duplicate_pairs(images, features: np.ndarray, near: Neighbours | None = None, sides: np.ndarray | None = None
                    ) -> list[Pair]:
    """Exact pairs, then near pairs that are not already exact, best match first (`near`: the features'
    nearest neighbours, when already found; `sides`: each image's own shorter side in px, 0 where unknown)."""
    hashes = pixel_hashes(images)
    small = None if sides is None else (np.asarray(sides) > 0) & (np.asarray(sides) < SMALL)
    close = [p for p in near_pairs(images, near if near is not None else nearest(features), small=small)
             if hashes[p.first] != hashes[p.second]]
    return exact_pairs(hashes) + sorted(close, key=lambda p: -p.similarity)
