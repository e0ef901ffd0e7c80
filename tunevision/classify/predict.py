"""Predict with a bundle, an exported .onnx, or (asked for by name) the pretrained ImageNet classifier.

Inputs are files, folders and globs (the CLI), or also PIL images, arrays and tensors (the Python API); all of
them become the bundle's decoded squares through its `Preprocessing`, then `predict_probs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tunevision.classify.export import export_bundle
from tunevision.classify.inference import TTA, on_body_graph, predict_probs
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import Runtime
from tunevision.data.images import DEFAULT_MAX_PIXELS
from tunevision.data.inputs import NOT_FOUND, expand_inputs
from tunevision.data.pixels import read_pictures
from tunevision.data.preprocess import Preprocessing
from tunevision.data.sources import Sample, load_images
from tunevision.data.tables import is_table
from tunevision.models.backbones import Classifier, create_backbone, imagenet_classifier
from tunevision.models.bundle import BundleMeta, bundle_dir, load_bundle

IMAGENET = "imagenet"  # the model argument that names the pretrained backbone's own 1000-class head


@dataclass
class Prediction:
    path: str                                                    # the input's name (a path, or e.g. "image 0")
    top: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), best first
    error: str = ""
    labels: list[str] | None = None      # multi-label models: the labels at or above their thresholds
    probs: dict[str, float] | None = None  # multi-label models: every label's probability

    def to_dict(self) -> dict:
        out = {"path": self.path, "error": self.error or None,
               "top": [{"label": label, "prob": round(prob, 5)} for label, prob in self.top]}
        if self.labels is not None:
            out.update(labels=self.labels, probs={k: round(v, 5) for k, v in (self.probs or {}).items()})
        return out

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    @property
    def prob(self) -> float | None:
        return self.top[0][1] if self.top else None

    def __repr__(self) -> str:
        if self.error:
            return f"Prediction(path={self.path!r}, error={self.error!r})"
        if self.labels is not None:
            probs = ", ".join(f"{k!r}: {v:.3f}" for k, v in (self.probs or {}).items())
            return f"Prediction(labels={self.labels!r}, probs={{{probs}}}, path={self.path!r})"
        top = ", ".join(f"({label!r}, {prob:.3f})" for label, prob in self.top)
        return f"Prediction(label={self.label!r}, prob={self.prob:.3f}, top=[{top}], path={self.path!r})"


def imagenet_labels() -> list[str]:
    return resources.files("tunevision").joinpath("imagenet_classes.txt").read_text().splitlines()


def imagenet_model(backbone: str = "efficientnet_lite0", weights: str | None = None) -> tuple[Classifier, BundleMeta]:
    """The pretrained backbone with its own ImageNet head, described like a bundle."""
    b = create_backbone(backbone, pretrained=True, weights=weights)
    prep = Preprocessing.for_size(b.input_size, b.crop_pct, b.mean, b.std)
    return imagenet_classifier(b), BundleMeta(backbone, imagenet_labels(), prep.image_size, prep.resize_size,
                                              list(b.mean), list(b.std), mode=IMAGENET)


def model_source(arg: str) -> str:
    """A model argument checked, never guessed: a bundle or run folder, an exported .onnx file, or 'imagenet'."""
    if arg == IMAGENET:
        return arg
    if arg.endswith(".onnx"):
        if not Path(arg).expanduser().is_file():
            raise TunevisionError(f"{arg}: no such ONNX file")
        return str(Path(arg).expanduser())
    try:
        return str(bundle_dir(arg))
    except TunevisionError:
        raise TunevisionError(f"{arg}: not a model: expected a run folder, a bundle folder (model.json + "
                              f"model.safetensors), an exported .onnx file, or '{IMAGENET}' for the pretrained "
                              "ImageNet classes (as in: tunevision classify IMAGE)") from None


def training_cache(bundle: str | Path) -> Path | None:
    """The feature cache of the run that trained a bundle (its run folder's config.yaml says), where the ONNX graph
    of its body may be kept (`inference.on_body_graph`); None for a bundle outside a run folder."""
    folder = Path(bundle)
    run = folder.parent if folder.name == "model" else folder
    if not (run / "config.yaml").is_file():
        return None
    cache = RunConfig.load(run / "config.yaml").data.cache_dir
    return Path(cache).expanduser() if cache else None


def bundle_onnx(bundle: str) -> str:
    """The bundle's ONNX export in BUNDLE/export/, made (and parity-checked) on first use or when stale."""
    folder = bundle_dir(bundle)
    path = folder / "export" / "model.onnx"
    if not path.is_file() or path.stat().st_mtime < (folder / "model.safetensors").stat().st_mtime:
        path, _ = export_bundle(folder, "onnx")
    return str(path)


def load_predictor(source: str, device: str = "cpu", runtime: str = "torch") -> tuple[Classifier, BundleMeta]:
    """The network and its description for a checked model argument (see `model_source`).
    `runtime="onnx"` runs a bundle through its ONNX export, `"onnx-int8"` through its gated int8 export (both
    made on first use): on CPUs the fastest paths measured here."""
    source = model_source(source)
    if runtime != "torch" and source == IMAGENET:
        raise TunevisionError(f"--runtime {runtime} needs a bundle or run folder: predict RUN_DIR IMAGES")
    if runtime == "onnx" and not source.endswith(".onnx"):
        source = bundle_onnx(source)
    elif runtime == "onnx-int8" and not source.endswith(".onnx"):
        from tunevision.classify.quantize import bundle_int8
        source = bundle_int8(source)
    if source.endswith(".onnx"):
        from tunevision.classify.export import OnnxClassifier
        model = OnnxClassifier(source)
        return model, model.meta
    if source == IMAGENET:
        model, meta = imagenet_model()
        return model.to(device), meta
    return load_bundle(source, device)


def load_scorer(source: str, rt: Runtime, runtime: str = "torch") -> tuple[torch.nn.Module, BundleMeta]:
    """`load_predictor` for scoring images (predict, serve): a bundle in torch runs its body on the ONNX graph its
    training run kept, where there is one (`inference.on_body_graph`: fp32 on a CPU, checked against the body)."""
    network, meta = load_predictor(source, rt.device, runtime)
    if runtime == "torch":  # the bundle, not one of its exports
        network = on_body_graph(network, meta.image_size, rt, training_cache(model_source(source))) or network
    return network, meta


def top_k_predictions(probs: np.ndarray, classes: list[str], names: list[str], top_k: int,
                      thresholds: list[float] | None = None) -> list[Prediction]:
    """The top_k classes of each row; with `thresholds` (multi-label), also the labels at or above them."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise TunevisionError(f"top_k must be an integer >= 1, got {top_k!r}")
    k = min(int(top_k), len(classes))
    out = []
    for name, row in zip(names, probs):
        pred = Prediction(name, [(classes[i], float(row[i])) for i in np.argsort(-row)[:k]])
        if thresholds is not None:
            order = np.argsort(-row)
            pred.labels = [classes[i] for i in order if row[i] >= thresholds[i]]
            pred.probs = {classes[i]: float(row[i]) for i in order}
        out.append(pred)
    return out


def label_thresholds(meta: BundleMeta, threshold: float | None = None) -> list[float] | None:
    """A multi-label model's thresholds (its own, or `threshold` for every label); None for a classifier."""
    if meta.task != "multilabel":
        return None
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise TunevisionError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return meta.thresholds if threshold is None else [float(threshold)] * len(meta.classes)


def decode_inputs(inputs: Sequence[Any], prep: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> tuple[list[str], list[np.ndarray | str]]:
    """(names, decoded square or the reason there is none) for every image the inputs stand for, in input order:
    files, folders and globs (all their files decoded together, in threads), tables of pixel rows (each row a
    picture named `test.csv#1`, `#2`...: Kaggle's MNIST test.csv), PIL images, arrays and tensors."""
    tables = {i: read_pictures(Path(item).expanduser()) for i, item in enumerate(inputs)
              if isinstance(item, (str, Path)) and is_table(str(item))}
    tables = {i: pictures for i, pictures in tables.items() if pictures is not None}
    found = {i: expand_inputs([str(item)])[0][1] for i, item in enumerate(inputs)
             if isinstance(item, (str, Path)) and i not in tables}
    paths = [p for ps in found.values() for p in ps]
    squares, bad = load_images([Sample(p, -1) for p in paths], prep.resize_size, cache_dir=None,
                               max_pixels=max_pixels, fit=prep.fit)
    errors, decoded = {b.path: b.reason for b in bad}, iter(squares)
    names: list[str] = []
    items: list[np.ndarray | str] = []
    for i, item in enumerate(inputs):
        if i in tables:
            names += [f"{item}#{row}" for row in range(1, len(tables[i]) + 1)]
            items += [prep.square(picture) for picture in tables[i]]
        elif i not in found:
            names.append(f"image {i}")
            try:
                items.append(prep.square(item))
            except (TypeError, ValueError) as e:
                raise TunevisionError(f"predict: input {i}: {e}") from None
        elif not found[i]:
            names.append(str(item))
            items.append(NOT_FOUND)
        for p in found.get(i, []):
            names.append(p)
            items.append(errors[p] if p in errors else next(decoded))
    return names, items


def predict_decoded(model: Classifier, meta: BundleMeta, names: list[str], items: list[np.ndarray | str],
                    runtime: Runtime, *, top_k: int = 3, tta: TTA | None = None,
                    progress: Callable[[int], None] | None = None, threshold: float | None = None
                    ) -> list[Prediction]:
    """One Prediction per decoded square, in order; an item that is a reason becomes a Prediction with `error`.
    `threshold`: a multi-label model's threshold for every label instead of its own."""
    good = [(n, it) for n, it in zip(names, items) if not isinstance(it, str)]
    probs = predict_probs(model, np.stack([it for _, it in good]), runtime, meta.image_size,
                          temperature=meta.temperatures, tta=tta, progress=progress) if good else np.zeros((0, 0))
    rows = iter(top_k_predictions(probs, meta.classes, [n for n, _ in good], top_k, label_thresholds(meta, threshold)))
    return [Prediction(n, error=it) if isinstance(it, str) else next(rows) for n, it in zip(names, items)]


def predict_paths(model: Classifier, meta: BundleMeta, items: list[str], runtime: Runtime, *, top_k: int = 3,
                  tta: TTA | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  progress: Callable[[int], None] | None = None, threshold: float | None = None) -> list[Prediction]:
    """One Prediction per image, in input order; an unreadable file, or an input that matched nothing, carries
    `error` instead of `top`."""
    names, decoded = decode_inputs(items, meta.preprocess, max_pixels=max_pixels)
    return predict_decoded(model, meta, names, decoded, runtime, top_k=top_k, tta=tta, progress=progress,
                           threshold=threshold)
