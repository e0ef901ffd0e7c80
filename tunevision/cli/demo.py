"""`tunevision demo`: real photos that arrive with scikit-image, written as class folders, trained end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tunevision.classify.train import FitResult, fit
from tunevision.core.config import DataConfig, RunConfig


def write_lfw_subset(folder: Path) -> Path:
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25x25 grayscale, as face/ and non-face/ PNGs."""
    from skimage.data import lfw_subset
    images = lfw_subset()
    for i, img in enumerate(images):
        cls = "face" if i < 100 else "non-face"
        path = folder / cls / f"{cls}-{i % 100:03d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)).save(path)
    return folder


def run_demo(out: Path) -> FitResult:
    data = write_lfw_subset(out / "faces")
    print(f"demo data: {data}/face, {data}/non-face (100 photos each): the layout `tunevision train` expects")
    result = fit(RunConfig(data=DataConfig(data=str(data)), out=str(out / "runs")))
    print(f"\nnext: tunevision predict {result.run_dir} {data}/face/face-000.png"
          f"\n      tunevision evaluate {result.run_dir} {data}")
    return result
