"""Predict with a bundle (or the pretrained ImageNet classifier) on files, folders and globs."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from .bundle import BundleMeta, load_bundle
from .data import Sample, load_images
from .evaluate import TTA, predict_probs
from .images import DEFAULT_MAX_PIXELS, is_image_name
from .models import Classifier, create_backbone, imagenet_classifier
from .runtime import Runtime


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), best first
    error: str = ""


def imagenet_labels() -> list[str]:
    return resources.files("tunevision").joinpath("imagenet_classes.txt").read_text().splitlines()


def imagenet_model(backbone: str = "efficientnet_lite0", weights: str | None = None) -> tuple[Classifier, BundleMeta]:
    """The pretrained backbone with its own ImageNet head, described like a bundle."""
    b = create_backbone(backbone, pretrained=True, weights=weights)
    resize = round(b.input_size / b.crop_pct)
    return imagenet_classifier(b), BundleMeta(backbone, imagenet_labels(), b.input_size, resize,
                                              list(b.mean), list(b.std), mode="imagenet")


def split_model_argument(inputs: list[str]) -> tuple[str | None, list[str]]:
    """`predict [MODEL] IMAGES...`: MODEL is a bundle/run folder or an .onnx file, else absent (ImageNet)."""
    from .bundle import bundle_dir
    from .errors import TunevisionError
    if inputs and inputs[0].endswith(".onnx") and Path(inputs[0]).is_file():
        return inputs[0], inputs[1:]
    try:
        return str(bundle_dir(inputs[0])), inputs[1:]
    except (TunevisionError, IndexError):
        return None, inputs


def bundle_onnx(bundle: str) -> str:
    """The bundle's ONNX export in BUNDLE/export/, made (and parity-checked) on first use or when stale."""
    from .bundle import bundle_dir
    from .export import export_bundle
    folder = bundle_dir(bundle)
    path = folder / "export" / "model.onnx"
    if not path.is_file() or path.stat().st_mtime < (folder / "model.safetensors").stat().st_mtime:
        path, _ = export_bundle(folder, "onnx")
    return str(path)


def load_predictor(source: str | None, device: str = "cpu", runtime: str = "torch") -> tuple[Classifier, BundleMeta]:
    """A bundle, an exported .onnx (onnxruntime, no torch model code), or the pretrained ImageNet model.
    `runtime="onnx"` runs a bundle through its ONNX export: on CPUs the fastest path measured here."""
    if runtime == "onnx" and source and not source.endswith(".onnx"):
        source = bundle_onnx(source)
    elif runtime == "onnx" and not source:
        from .errors import TunevisionError
        raise TunevisionError("--runtime onnx needs a bundle or run folder first: predict RUN_DIR IMAGES")
    if source and source.endswith(".onnx"):
        from .export import OnnxClassifier
        model = OnnxClassifier(source)
        return model, model.meta
    return load_bundle(source, device) if source else imagenet_model()


def expand_inputs(items: list[str]) -> tuple[list[str], list[Prediction]]:
    """Files, folders (recursively, images only) and glob patterns, in a stable order; misses reported."""
    paths, missing = [], []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(str(Path(d) / f) for d, _, fs in os.walk(p) for f in fs if is_image_name(f))
        elif p.is_file():
            found = [str(p)]
        else:
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
        if not found:
            missing.append(Prediction(item, error="no such file, or no images in that folder/pattern"))
        paths += found
    return paths, missing


def predict_paths(model: Classifier, meta: BundleMeta, items: list[str], runtime: Runtime, *, top_k: int = 3,
                  tta: TTA | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """One Prediction per input image, in input order; unreadable files carry `error` instead of `top`."""
    paths, missing = expand_inputs(items)
    images, bad = load_images([Sample(p, -1) for p in paths], meta.resize_size, cache_dir=None,
                              max_pixels=max_pixels)
    errors = {b.path: b.reason for b in bad}
    ok_paths = [p for p in paths if p not in errors]
    probs = predict_probs(model, images, runtime, meta.image_size, temperature=meta.temperature, tta=tta,
                          progress=progress)
    k = min(top_k, len(meta.classes))
    by_path = {}
    for p, row in zip(ok_paths, probs):
        order = np.argsort(-row)[:k]
        by_path[p] = Prediction(p, [(meta.classes[i], float(row[i])) for i in order])
    return missing + [by_path.get(p) or Prediction(p, error=errors[p]) for p in paths]
