"""Predicting with a detection or segmentation bundle: boxes (and masks) per image, drawn, or as JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from tunevision.core.errors import TunevisionError
from tunevision.data.images import DEFAULT_MAX_PIXELS, ImageError, open_image, to_rgb
from tunevision.data.inputs import NOT_FOUND, expand_inputs
from tunevision.data.scenes import resize_shorter
from tunevision.models.bundle import BundleMeta, bundle_dir, load_weights, read_meta
from tunevision.models.detectors import SceneSpec, create_scene_model
from tunevision.models.hub import (
    Detection,
    draw_detections,
    output_path,
    overlay,
    pixel_fractions,
)
from tunevision.scene.evaluate import detect_batch, segment_batch


def load_scene_bundle(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, BundleMeta]:
    """A detector/segmenter rebuilt from its bundle alone (no pretrained weights are read)."""
    folder = bundle_dir(path)
    meta = read_meta(folder)
    if meta.task not in ("detect", "segment"):
        raise TunevisionError(f"{folder}: a {meta.task} bundle, not a detector or segmenter")
    try:
        spec = SceneSpec(**meta.extra["spec"])
        sizes_ok = all(isinstance(v, int) and 16 <= v <= 8192 for v in (spec.min_size, spec.max_size))
        if not (isinstance(spec.arch, str) and spec.num_classes == len(meta.classes) and sizes_ok):
            raise ValueError("arch, num_classes (= len(classes)), min_size and max_size in 16..8192")
        model = create_scene_model(meta.task, spec, pretrained=False)
    except (KeyError, TypeError, ValueError, TunevisionError) as e:
        raise TunevisionError(f"{folder / 'model.json'}: no usable extra.spec for a {meta.task} bundle "
                              f"({type(e).__name__}: {str(e)[:60]}); re-save the bundle") from None
    return load_weights(model, folder).to(device).eval(), meta


@dataclass
class ScenePrediction:
    """What a detector or segmenter found in one image. `plot()` draws it; `to_dict()` is its JSON."""
    source: str
    detections: list[Detection] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) class per pixel, 0 = background (segment)
    classes: list[str] = field(default_factory=list, repr=False)
    task: str = field(default="detect", repr=False)
    image: Image.Image | None = field(default=None, repr=False)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.error:
            return {**out, "error": self.error}
        if self.task == "detect":
            out["detections"] = [{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
                                 for d in self.detections]
        if self.mask is not None:
            out["pixel_fractions"] = {k: round(v, 4) for k, v in
                                      pixel_fractions(self.mask, ["background", *self.classes]).items()}
        return out

    def plot(self) -> Image.Image:
        if self.image is None:
            raise TunevisionError(f"{self.source}: no image to draw ({self.error or 'not kept'})")
        image = self.image if self.mask is None else overlay(self.image, self.mask, len(self.classes) + 1)
        return draw_detections(image, self.detections) if self.detections else image

    def save(self, path: str | Path) -> Path:
        self.plot().save(path)
        return Path(path)


def open_inputs(inputs: Sequence[Any], max_pixels: int) -> list[tuple[str, Image.Image | str]]:
    """(name, RGB image or the reason there is none) for every image that files, folders, globs, PIL images or
    uint8 arrays stand for."""
    out: list[tuple[str, Image.Image | str]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            out.append((f"image {i}", to_rgb(item)))
        elif isinstance(item, np.ndarray):
            out.append((f"image {i}", Image.fromarray(item.astype(np.uint8)).convert("RGB")))
        else:
            found = expand_inputs([str(item)])[0][1]
            if not found:
                out.append((str(item), NOT_FOUND))
            for path in found:
                try:
                    out.append((path, to_rgb(open_image(path, max_pixels=max_pixels))))
                except (ImageError, OSError) as e:
                    out.append((path, str(e)))
    return out


def predict_scenes(model: torch.nn.Module, meta: BundleMeta, inputs: Sequence[Any], *, threshold: float = 0.5,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> list[ScenePrediction]:
    results = []
    device = next(model.parameters()).device
    for name, image in open_inputs(inputs, max_pixels):
        if isinstance(image, str):
            results.append(ScenePrediction(name, classes=meta.classes, task=meta.task, error=image))
            continue
        resized, scale = resize_shorter(image, meta.image_size)
        x = (pil_to_tensor(resized).float() / 255).to(device)
        if meta.task == "detect":
            out = detect_batch(model, [x])[0]
            keep = out["scores"] >= threshold
            found = [Detection(meta.classes[int(l) - 1], float(s), tuple(float(v) / scale for v in b))
                     for l, s, b in zip(out["labels"][keep], out["scores"][keep], out["boxes"][keep])]
            mask = instance_class_map(out, keep, (image.height, image.width)) if "masks" in out else None
            results.append(ScenePrediction(name, found, mask, classes=meta.classes, image=image))
        else:
            classes = segment_batch(model, [x], size=(image.height, image.width))[0]
            results.append(ScenePrediction(name, mask=classes.cpu().numpy().astype(np.uint8), classes=meta.classes,
                                           task="segment", image=image))
    return results


def instance_class_map(out: dict, keep: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Mask R-CNN's kept instance masks (probability > 0.5) as one class map at the photo's size; where instances
    overlap, the higher-scoring one (drawn last) wins."""
    masks = out["masks"][keep][:, 0]
    if len(masks) == 0:
        return np.zeros(size, np.uint8)
    masks = torch.nn.functional.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    classes = np.zeros(size, np.uint8)
    for m, label in reversed(list(zip(masks, out["labels"][keep]))):  # scores come sorted, highest first
        classes[(m > 0.5).numpy()] = int(label)
    return classes


def write_scene_predictions(results: list[ScenePrediction], out: Path) -> list[dict]:
    """One annotated PNG per image in `out` and predictions.json; returns the JSON rows (with their PNG)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        row = r.to_dict()
        if not r.error:
            row["output"] = str(r.save(output_path(out, r.source, ".png")))
        rows.append(row)
    (out / "predictions.json").write_text(json.dumps(rows, indent=2))
    return rows
