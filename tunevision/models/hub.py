"""Pretrained torchvision detectors and segmenters used as they are: boxes drawn, pixels coloured.

The models, their weight enums and category lists are torchvision's own; this module only loads them
(hub weights when online, `--weights FILE` offline), runs them and draws the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes

from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import read_state_dict

DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn",
             "ssdlite320_mobilenet_v3_large")
SEGMENTERS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
              "lraspp_mobilenet_v3_large")


def load_scene_model(name: str, choices: tuple[str, ...], *, weights: str | None = None,
                     pretrained: bool = True) -> tuple[torch.nn.Module, list[str], object]:
    """(model in eval mode, category names, the weight enum entry whose transforms/meta we use)."""
    if name not in choices:
        raise TunevisionError(f"unknown model {name!r}; choose one of {', '.join(choices)}")
    entry = torchvision.models.get_model_weights(name).DEFAULT  # metadata only: nothing is downloaded here
    if weights:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                             num_classes=len(entry.meta["categories"]))
        missing, unexpected = model.load_state_dict(read_state_dict(weights), strict=False)
        if missing or unexpected:
            raise TunevisionError(f"{weights}: not a {name} state dict (missing {missing[:2]}, unexpected "
                                  f"{unexpected[:2]})")
    elif pretrained:
        try:
            model = torchvision.models.get_model(name, weights=entry)
        except Exception as e:
            raise TunevisionError(f"could not fetch weights for {name} ({type(e).__name__}); offline, download "
                                  f"{entry.url} elsewhere and pass --weights FILE") from None
    else:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                             num_classes=len(entry.meta["categories"]))
    return model.eval(), list(entry.meta["categories"]), entry


@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@torch.no_grad()
def detect(model: torch.nn.Module, categories: list[str], image: Image.Image, threshold: float = 0.5
           ) -> list[Detection]:
    x = pil_to_tensor(image.convert("RGB")).float() / 255  # detectors normalise and resize internally
    out = model([x])[0]
    keep = out["scores"] >= threshold
    return [Detection(categories[int(l)] if int(l) < len(categories) else str(int(l)), float(s),
                      tuple(float(v) for v in b))
            for l, s, b in zip(out["labels"][keep], out["scores"][keep], out["boxes"][keep])]


def draw_detections(image: Image.Image, detections: list[Detection], color: str = "red") -> Image.Image:
    return Image.fromarray(draw_boxes(np.asarray(image.convert("RGB")), [d.box for d in detections],
                                      [f"{d.label} {d.score:.0%}" for d in detections], color))


def draw_boxes(image: np.ndarray, boxes, captions: list[str], color: str = "red") -> np.ndarray:
    """(H, W, 3) uint8 with labelled boxes drawn; line width grows with the image."""
    if len(boxes) == 0:
        return image
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # a copy: PIL's arrays are read-only
    width = max(2, round(max(image.shape[:2]) / 250))
    # at the first drawing: what never draws does not load matplotlib
    from matplotlib import font_manager
    font = font_manager.findfont("DejaVu Sans")
    out = draw_bounding_boxes(img, torch.as_tensor(np.asarray(boxes, dtype=np.float32)), captions, colors=color,
                              width=width, font=font, font_size=max(10, round(max(image.shape[:2]) / 45)),
                              label_colors="white", fill_labels=True)
    return out.permute(1, 2, 0).numpy()


def palette(n: int) -> np.ndarray:
    """PASCAL VOC's colour map: class i gets the colour made from the bits of i (distinct, stable)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


@torch.no_grad()
def segment(model: torch.nn.Module, entry, image: Image.Image) -> np.ndarray:
    """(H, W) class index per pixel, at the photo's own size."""
    rgb = image.convert("RGB")
    x = entry.transforms()(pil_to_tensor(rgb)).unsqueeze(0)
    logits = model(x)["out"]
    logits = torch.nn.functional.interpolate(logits, size=(rgb.height, rgb.width), mode="bilinear",
                                             align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def class_map_image(mask: np.ndarray, n_classes: int) -> Image.Image:
    im = Image.fromarray(mask, "P")
    im.putpalette(palette(max(n_classes, 1)).flatten().tolist())
    return im


def overlay(image: Image.Image, mask: np.ndarray, n_classes: int, alpha: float = 0.5) -> Image.Image:
    colours = palette(max(n_classes, 1))[mask]
    blended = np.asarray(image.convert("RGB"), np.float32) * (1 - alpha) + colours * alpha
    blended[mask == 0] = np.asarray(image.convert("RGB"))[mask == 0]  # background stays the photo
    return Image.fromarray(blended.astype(np.uint8))


def pixel_fractions(mask: np.ndarray, categories: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.ravel(), minlength=len(categories))
    return {categories[i]: float(c / mask.size) for i, c in enumerate(counts) if c}


def output_path(out: Path, source: str, suffix: str) -> Path:
    return out / f"{Path(source).stem}{suffix}"
