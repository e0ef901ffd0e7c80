"""A run's data, ready to train on: discovered, split, decoded once into the uint8 cache, unusable files listed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tunevision.core.config import CACHED_MODES, RunConfig
from tunevision.core.distributed import Dist
from tunevision.core.errors import TunevisionError
from tunevision.core.ui import RunLog
from tunevision.data.discover import discover_run
from tunevision.data.images import image_size_for, resolve_fit
from tunevision.data.preprocess import Preprocessing
from tunevision.data.sources import (
    Dataset,
    Sample,
    cache_key,
    drop_skipped,
    load_images,
    read_cached_images,
    write_cached_images,
)
from tunevision.models.backbones import Backbone


def default_image_size(backbone: Backbone, mode: str) -> int:
    return image_size_for(backbone.input_size, backbone.crop_pct, mode in CACHED_MODES)


@dataclass
class Data:
    dataset: Dataset
    train: list[Sample]
    val: list[Sample]
    train_images: np.ndarray  # (N, resize, resize, 3) uint8, possibly memory-mapped, or ResizedImages
    val_images: np.ndarray
    prep: Preprocessing
    key: str = ""             # identifies the decoded images, for the feature cache
    # (body fingerprint, fp32 features of the validation images' eval view), kept by head training so that the
    # final evaluation of a frozen body is the head on them, not a second pass of the network over the images
    val_features: tuple[str, torch.Tensor] | None = None

    @property
    def image_size(self) -> int:
        return self.prep.image_size

    @property
    def resize_size(self) -> int:
        return self.prep.resize_size

    @property
    def train_labels(self) -> torch.Tensor:
        """int64 class indices (N,), or for multi-label data float32 0/1 targets (N, labels): the training loss,
        the metrics and mixup all read the task from this form (see classify/objective.py)."""
        return targets(self.train, len(self.dataset.classes), self.dataset.multilabel)

    @property
    def val_labels(self) -> torch.Tensor:
        return targets(self.val, len(self.dataset.classes), self.dataset.multilabel)


def targets(samples: list[Sample], n_classes: int, multilabel: bool) -> torch.Tensor:
    if not multilabel:
        return torch.tensor([s.label for s in samples], dtype=torch.long)
    out = torch.zeros(len(samples), n_classes)
    for i, s in enumerate(samples):
        out[i, list(s.labels)] = 1.0
    return out


class ResizedImages:
    """Small decoded squares (MNIST's 28 px, CIFAR's 32 px) that read as the model's resize size: indexing
    returns uint8 batches resized on the fly (bilinear, antialiased). The cache then holds the images at their
    own resolution: 10,000 digits are 23 MB instead of 2.6 GB at 293 px."""

    def __init__(self, images: np.ndarray, size: int) -> None:
        self.images, self.size = images, size
        self.shape = (len(images), size, size, 3)
        self.dtype = images.dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> np.ndarray:
        small = torch.from_numpy(np.array(self.images[index]))
        single = small.dim() == 3
        x = (small[None] if single else small).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return out[0] if single else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype) if dtype else self[:]


def native_size(ds: Dataset, resize: int) -> int:
    """The side to decode (and cache) at: an archive's own side when its images are smaller than `resize`."""
    if ds.arrays is None:
        return resize
    return min(resize, max(ds.arrays.shape[1], ds.arrays.shape[2]))


def cache_dir(cfg: RunConfig) -> Path | None:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None


def decode(samples: list[Sample], side: int, d: Dist, *, cache_dir: Path | None, progress, log, **kw
           ) -> tuple[np.ndarray, list]:
    """`load_images`, or under torchrun each rank decodes its share, all gather it, and rank 0 alone writes the
    cache. Whether the cache already holds the array is rank 0's decision, so that no rank waits in a
    collective that another skipped."""
    if not d.enabled:
        return load_images(samples, side, cache_dir=cache_dir, progress=progress, log=log, **kw)
    key = cache_key(samples, side, kw.get("arrays"))
    folder = Path(cache_dir) / "images" if cache_dir else None
    cached = d.broadcast(bool(folder) and read_cached_images(folder / f"{key}.npy", folder / f"{key}.json",
                                                       len(samples), side, log) is not None)
    if cached:
        return load_images(samples, side, cache_dir=cache_dir, progress=progress, log=log, **kw)
    lo, hi = d.spans(len(samples))[d.rank]
    images, bad = load_images(samples[lo:hi], side, cache_dir=None, progress=progress, **kw)
    parts = [None] * d.world
    torch.distributed.all_gather_object(parts, (np.ascontiguousarray(images), bad))
    images = np.concatenate([p[0] for p in parts]) if parts else images
    bad = sorted((b for p in parts for b in p[1]), key=lambda b: b.path)
    if d.main and folder is not None:
        write_cached_images(folder / f"{key}.npy", folder / f"{key}.json", images, bad, len(samples), log)
    d.barrier()
    return images, bad


def check_multilabel(cfg: RunConfig, ds: Dataset, train: list[Sample], val: list[Sample]) -> None:
    """Multi-label data the training could not learn from, refused in one line."""
    if cfg.train.balance == "sampler":
        raise TunevisionError("--balance sampler draws by class, which multi-label images do not have; use "
                              "--balance weights (positive-label weights from label frequencies)")
    for i, name in enumerate(ds.classes):
        if not any(s.has(i) for s in train):
            where = "only in validation" if any(s.has(i) for s in val) else "on no usable image"
            raise TunevisionError(f"{cfg.data.data}: label {name!r} appears {where}; a label needs training "
                                  "images (drop it, or move some of its images to training)")


def prepare_data(cfg: RunConfig, backbone: Backbone, log: RunLog, d: Dist = Dist(), training: bool = True) -> Data:
    """Discover, decode once (cached), drop and report unusable files, refuse untrainable datasets. `training`
    False: the data is read for its features alone (the audit, `embed`), which one class, or a label with no
    training image, does not stop (a detector's one class of objects has duplicates too)."""
    with log.stage("discovery"):
        ds = discover_run(cfg)
    image_size = cfg.data.image_size or default_image_size(backbone, cfg.train.mode)
    fit = resolve_fit(cfg.data.resize, ds.multilabel)
    prep = Preprocessing.for_size(image_size, backbone.crop_pct, backbone.mean, backbone.std, fit)
    kw = dict(cache_dir=cache_dir(cfg), arrays=ds.arrays, max_pixels=cfg.data.max_pixels,
              workers=cfg.data.workers or None, fit=fit, log=log)
    side = native_size(ds, prep.resize_size)
    with log.stage("decode"), log.progress(len(ds.train) + len(ds.val), "decoding images") as advance:
        train_images, bad_train = decode(ds.train, side, d, progress=advance, **kw)
        val_images, bad_val = decode(ds.val, side, d, progress=advance, **kw)
    if side < prep.resize_size:
        train_images, val_images = (ResizedImages(i, prep.resize_size) for i in (train_images, val_images))
    ds.skipped += bad_train + bad_val
    train, val = drop_skipped(ds.train, bad_train), drop_skipped(ds.val, bad_val)
    if ds.multilabel and training:
        check_multilabel(cfg, ds, train, val)
    present = sorted({ds.classes[i] for i in range(len(ds.classes)) for s in train if s.has(i)})
    if len(present) < (2 if training else 1):
        raise TunevisionError(f"{cfg.data.data}: {len(present)} class(es) with usable training images "
                              f"({', '.join(present) or 'none'}); a classifier needs at least 2 class folders")
    if not val:
        raise TunevisionError(f"{cfg.data.data}: the validation split is empty; add images to val/ or "
                              "give each class at least 2 images for the automatic split")
    key = cache_key(train + val, prep.resize_size, ds.arrays, fit)
    return Data(ds, train, val, train_images, val_images, prep, key)
