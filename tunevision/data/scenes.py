"""Annotated images decoded once into memory, and the augmentations that move boxes and masks with the pixels.

Images are decoded once per run at the largest training scale (uint8, shorter side = `size`); every epoch
then augments those tensors with torchvision's transforms v2, whose `tv_tensors` carry boxes and masks
through flips, crops and resizes together with the image.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from tunevision.data.annotated import Annotated, draw_outlines, mask_ids, mask_values
from tunevision.data.images import DEFAULT_MAX_PIXELS, ImageError, open_image, to_rgb

IGNORE = 255  # mask value that the segmentation loss and metric skip (padding)


@dataclass
class SceneSample:
    image: torch.Tensor           # uint8 (3, H, W)
    boxes: torch.Tensor           # float32 (N, 4), pixels of `image`
    labels: torch.Tensor          # int64 (N,), 1-based: 0 is background in torchvision's detectors
    masks: torch.Tensor | None    # uint8 (N, H, W) one binary mask per box, when the data has masks
    source: str

    def semantic(self) -> torch.Tensor:
        """(H, W) int64 class map: each instance's pixels take its label, the rest is background (0)."""
        out = torch.zeros(self.image.shape[1:], dtype=torch.int64)
        for mask, label in zip(self.masks if self.masks is not None else [], self.labels):
            out[mask.bool()] = label
        return out


def resize_shorter(image: Image.Image, size: int, resample: int = Image.BILINEAR) -> tuple[Image.Image, float]:
    """The image with its shorter side at `size` (PIL's antialiased resampling), and the scale applied. Training,
    prediction, export and serving all give the models images made by this function, so they agree exactly
    (torchvision's in-graph resize, which would otherwise run, differs between PyTorch and ONNX)."""
    scale = size / min(image.size)
    new = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return (image if new == image.size else image.resize(new, resample)), scale


def decode_scene(item: Annotated, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> SceneSample:
    """One image resized so its shorter side is `size`, with its boxes and masks scaled along; ImageError when the
    image or its mask is unusable (the same checks as classification's: empty, not an image, truncated, bomb)."""
    im = open_image(item.image, max_pixels=max_pixels, upright=False)
    turned = ImageOps.exif_transpose(im)
    # Boxes refer to the stored pixels, as most annotation tools and COCO read them, unless the annotation
    # records the upright size (then the tool applied the EXIF orientation first).
    if turned.size != im.size and item.size == turned.size:
        im = turned
    resized, scale = resize_shorter(to_rgb(im), size)
    image = pil_to_tensor(resized)
    masks = None
    if item.mask is not None:
        try:  # class numbers of a colour mask, by its labelmap.txt (read_masks checked every colour has one)
            values = mask_values(open_image(item.mask, max_pixels=max_pixels, upright=False), item.mask)
        except ValueError as e:
            raise ImageError(f"{item.mask}: {e}") from None
        mask = Image.fromarray(values)
        # the ids of the full-size mask, in the boxes' order (annotated.mask_boxes): an object that resizing
        # loses keeps its (empty) mask, so masks and boxes stay pairs
        present = mask_ids(values)
        ids = np.asarray(resize_shorter(mask, size, Image.NEAREST)[0])
        masks = torch.from_numpy(np.stack([ids == k for k in present]).astype(np.uint8)
                                 if len(present) else np.zeros((0, *ids.shape), np.uint8))
    elif item.polygons is not None:  # outlines drawn at the decoded size: no mask file, no resampling
        masks = torch.from_numpy(draw_outlines(item.polygons, scale, resized.size))
    return SceneSample(image, torch.from_numpy(item.boxes * scale).float(), torch.from_numpy(item.labels + 1),
                       masks, str(item.image))


def decode_scenes(items: list[Annotated], size: int, workers: int = 0, progress=None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[SceneSample], list[tuple[str, str]]]:
    """All images decoded in threads (PIL releases the GIL while decoding): (samples, problems), an unusable image
    left out with its boxes and its reason."""
    def one(item: Annotated) -> SceneSample | tuple[str, str]:
        try:
            return decode_scene(item, size, max_pixels)
        except ImageError as e:
            return str(item.image), str(e)
    samples, problems = [], []
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for out in pool.map(one, items):
            (problems if isinstance(out, tuple) else samples).append(out)
            if progress:
                progress()
    return samples, problems


def detection_transform():
    """Train-time augmentation for detectors: flip and photometric jitter; the model's own transform then
    rescales each image to a random shorter side (multi-scale training)."""
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomPhotometricDistort(p=0.5),
                       v2.SanitizeBoundingBoxes()])


def segmentation_transform(crop: int):
    """Train-time augmentation for segmenters: scale jitter, a fixed-size crop (padding marked IGNORE), flip."""
    return v2.Compose([v2.RandomResize(int(crop * 0.75), int(crop * 1.5)),
                       v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
                       v2.RandomHorizontalFlip(), v2.RandomPhotometricDistort(p=0.5)])


def detection_example(sample: SceneSample, transform) -> tuple[torch.Tensor, dict]:
    """(float image in [0, 1], target) for a torchvision detector, augmented by `transform` (None = as is)."""
    image = tv_tensors.Image(sample.image)
    target = {"boxes": tv_tensors.BoundingBoxes(sample.boxes, format="XYXY", canvas_size=image.shape[-2:]),
              "labels": sample.labels}
    if sample.masks is not None:
        target["masks"] = tv_tensors.Mask(sample.masks)
    if transform is not None:
        image, target = transform(image, target)
    return image.as_subclass(torch.Tensor).float() / 255, {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def segmentation_example(sample: SceneSample, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """(float image in [0, 1], (H, W) int64 class map) for a semantic segmenter."""
    image, mask = tv_tensors.Image(sample.image), tv_tensors.Mask(sample.semantic())
    if transform is not None:
        image, mask = transform(image, mask)
    return image.as_subclass(torch.Tensor).float() / 255, mask.as_subclass(torch.Tensor).long()
