"""The one description of how a picture becomes a model input, stored in every bundle.

Decode: resize the shorter side to `resize_size` (bicubic) and keep the centre square (`fit` crop), or resize
the whole photo to a `resize_size` square (`fit` squash: multi-label scenes, whose labels sit anywhere); this
uint8 square is what the training cache holds. Eval view: the centre `image_size` crop of that square, scaled to [0, 1].
Mean/std normalisation happens inside the network (`Classifier`), so exports carry it too; it is recorded
here so that a bundle describes its whole input pipeline.

Training, evaluation, predict, serve, export, Grad-CAM, preview and the report all go through this object,
so none of them can crop differently from the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from tunevision.data.augment import eval_view
from tunevision.data.images import DEFAULT_MAX_PIXELS, decode_square, resize_for, square


@dataclass(frozen=True)
class Preprocessing:
    image_size: int                        # the network's input side
    resize_size: int                       # the decoded square's side (>= image_size)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fit: str = "crop"                      # how the photo becomes the square (`images.square`)

    @classmethod
    def for_size(cls, image_size: int, crop_pct: float, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 fit: str = "crop") -> "Preprocessing":
        """timm's eval convention: resize to image_size / crop_pct, then centre-crop image_size."""
        return cls(image_size, resize_for(image_size, crop_pct), tuple(mean), tuple(std), fit)

    def describe(self) -> str:
        """In words, as model.json records it."""
        first = ("resize shorter side to resize_size (bicubic)" if self.fit == "crop" else
                 "resize the whole photo to resize_size x resize_size (bicubic, aspect not kept)")
        return f"{first}, centre crop image_size, /255, (x - mean) / std"

    @property
    def crop_offset(self) -> int:
        return (self.resize_size - self.image_size) // 2

    def decode(self, source: str | Path | bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """A file or its bytes -> the (resize, resize, 3) uint8 square."""
        return decode_square(source, self.resize_size, max_pixels=max_pixels, fit=self.fit)

    def square(self, image: Any) -> np.ndarray:
        """A PIL image, an HxW[xC] array (uint8, or float in [0, 1]) or a CxHxW / HxWxC tensor -> the square."""
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            if image.dim() == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
                image = image.permute(1, 2, 0)  # CxHxW, as torchvision tensors are
            image = image.numpy()
        if isinstance(image, np.ndarray):
            if image.size == 0 or min(image.shape[:2], default=0) < 1:
                raise ValueError(f"an empty image array (shape {image.shape})")
            if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
                    or image.dtype == np.bool_):
                raise ValueError(f"an image array must hold real numbers, not {image.dtype}")
            if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
                raise ValueError("the image array holds NaN or infinite values")
            if image.dtype != np.uint8:
                scale = 255.0 if image.max(initial=0) <= 1.0 else 1.0
                image = np.clip(image.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[-1] not in (3, 4):
                raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {image.shape}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"cannot use a {type(image).__name__} as an image")
        return square(image, self.resize_size, self.fit)

    def crop(self, squares: np.ndarray) -> np.ndarray:
        """The centre image_size crop of (..., resize, resize, 3) uint8 squares: what the network sees."""
        o, s = self.crop_offset, self.image_size
        return squares[..., o:o + s, o:o + s, :]

    def batch(self, squares_u8: torch.Tensor) -> torch.Tensor:
        """(N, resize, resize, 3) uint8 -> (N, 3, image_size, image_size) float in [0, 1]."""
        return eval_view(squares_u8, self.image_size)
