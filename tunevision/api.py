"""The Python API: `fit` returns a `Model`, `load` reads one back; both as natural in a notebook as fastai's.

    import tunevision as tv
    model = tv.fit("photos/")              # same defaults, run folder and output as `tunevision train`
    model.predict("cat.jpg")               # Prediction(label='cats', prob=0.97, top=[...])
    model.evaluate("photos/val")           # Evaluation: accuracy, per-class table, confusion matrix

The CLI calls these same functions and only adds argument parsing and printing.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tunevision import tasks
from tunevision.classify.audit import AuditResult
from tunevision.classify.audit import audit as run_audit
from tunevision.classify.lr_range import find_lr, plot_lr_find
from tunevision.classify.model import Model, show_batch, to_uint8
from tunevision.classify.predict import model_source
from tunevision.core.config import SECTIONS, TOP_LEVEL, RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.ui import RunLog
from tunevision.data.archives import in_memory_source
from tunevision.data.augment import make_pipeline
from tunevision.data.images import ImageError
from tunevision.data.preprocess import Preprocessing
from tunevision.report.plots import image_grid

if TYPE_CHECKING:
    from tunevision.scene.api import SceneModel

__all__ = ["fit", "audit", "load", "preview", "show_batch", "lr_find", "LRFind", "Model"]

Image = Any  # a path, folder or glob (str/Path), a PIL image, an HxWxC array or a CxHxW tensor


def fit(data: Any = None, config: RunConfig | str | Path | None = None, *, quiet: bool = False,
        **options: Any) -> "Model | None":
    """Train a classifier and return it as a `Model`; writes the same run folder as `tunevision train`. (Under
    torchrun every process calls it; rank 0 gets the Model, the others None.)

    data: a folder of class subfolders (optionally train/ and val/), a CSV of path,label[,split], "mnist:DIR",
    "cifar10:DIR", a pandas DataFrame (a path column and labels, read like a CSV), a list of (path, label) pairs,
    or a pair (images, labels) of an N x H x W [x 3] uint8 array and N class names. config: a RunConfig or a YAML
    file; options override it. quiet: no console output (train.log is still written). A wrong option name or value
    raises TunevisionError.

    Options (each also a `tunevision train --flag` and a key of config.yaml):
    """
    if isinstance(data, RunConfig):  # tv.fit(config)
        data, config = None, data
    base = RunConfig.load(config) if isinstance(config, (str, Path)) else config
    cfg = RunConfig.from_options(_data_spec(data, base, options), base, **options)
    if not cfg.data.data:
        raise TunevisionError("no data: tunevision.fit('photos/') with one subfolder per class")
    task = tasks.for_data(cfg)
    return task.wrap(tasks.fit(cfg, log=RunLog(quiet=quiet)), cfg)


def _data_spec(data: Any, base: RunConfig | None, options: dict) -> str:
    """What the API was given as data, as a spec the CLI would take: a path as it is; pairs, arrays or a DataFrame
    written under the cache folder (`archives.in_memory_source`)."""
    if data is None or isinstance(data, (str, Path)):
        return str(data or "")
    cache = (base or RunConfig()).data.cache_dir or "~/.cache/tunevision"
    return in_memory_source(data, Path(options.get("cache_dir", cache)).expanduser())


def audit(data: Any, *, out: str | Path | None = None, quiet: bool = False, **options: Any) -> AuditResult:
    """Find what is wrong with a dataset: likely label errors (out-of-fold heads on frozen features, cleanlab),
    exact and near duplicates and train/val leakage, outliers, dark/blurry/low-information/odd-size images.
    Writes audit.csv (edit its action column, then `tv.fit(data, fixes="audit.csv")`), audit.json and
    audit.html into `out` (default OUT/DATA-audit-N). Options as for `fit` (backbone, image_size, val_fraction...)."""
    cfg = RunConfig.from_options(_data_spec(data, None, options), **options)
    return run_audit(cfg, log=RunLog(quiet=quiet), out=out)


def _options_doc() -> str:
    lines = []
    for section, cls in [*SECTIONS.items(), ("", RunConfig)]:
        for f in dataclasses.fields(cls):
            if section == "" and f.name not in TOP_LEVEL or f.name == "data":
                continue
            lines.append(f"        {f.name} (default {f.default!r}): {f.metadata['help']}")
    return "\n".join(lines)


fit.__doc__ = (fit.__doc__ or "") + "\n" + _options_doc() + "\n"


def load(path: str | Path, *, device: str = "auto") -> "Model | SceneModel":
    """A model from a run folder, a bundle folder, an exported .onnx file, or 'imagenet' (the pretrained
    backbone's 1000 ImageNet classes). A detector's or segmenter's bundle gives a SceneModel."""
    source = model_source(str(path))
    return tasks.for_bundle(source).load(source, device)


def preview(image: Image, augment: str = "default", *, size: int = 224, n: int = 8, columns: int = 4,
            seed: int = 0):
    """What an augmentation does to one image: n seeded random draws of the pipeline, as a grid."""
    prep = Preprocessing.for_size(size, 0.875)
    try:
        square = prep.decode(image) if isinstance(image, (str, Path)) else prep.square(image)
    except (ImageError, OSError, TypeError, ValueError) as e:
        raise TunevisionError(f"{image if isinstance(image, (str, Path)) else 'image'}: {e}") from None
    views = make_pipeline(augment, size)(torch.from_numpy(np.repeat(square[None], n, 0)),
                                         torch.Generator().manual_seed(seed))
    return image_grid(list(to_uint8(views)), [f"draw {i + 1}" for i in range(n)], columns=columns)


@dataclass
class LRFind:
    suggestion: float
    lrs: np.ndarray
    losses: np.ndarray

    def plot(self):
        return plot_lr_find(self.lrs, self.losses, self.suggestion)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.plot().savefig(buf, format="png")
        return buf.getvalue()


def lr_find(data: Any, *, steps: int = 100, quiet: bool = False, **options: Any) -> LRFind:
    """The LR range test (whole network, mode finetune unless told): loss against learning rate, a suggestion."""
    options.setdefault("mode", "finetune")
    cfg = RunConfig.from_options(_data_spec(data, None, options), **options)
    return LRFind(*find_lr(cfg, steps=steps, log=RunLog(quiet=quiet)))

