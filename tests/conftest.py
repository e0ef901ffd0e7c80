"""Tiny synthetic class folders: colour decides the class, so a tiny model learns it in seconds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
COLOURS = {"blue": (30, 60, 220), "red": (220, 40, 30), "green": (40, 200, 60)}


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 40) -> Image.Image:
    arr = np.clip(np.array(colour) + rng.normal(0, 25, (size, size + 8, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_class_folders(root: Path, n: int = 12, classes: tuple[str, ...] = ("blue", "red"), seed: int = 0,
                       split: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(n):
            sub = root / (("train" if i < n * 2 // 3 else "val") if split else "") / c
            sub.mkdir(parents=True, exist_ok=True)
            make_image(COLOURS[c], rng).save(sub / f"{c}_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def colour_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "colours", n=12)


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def tiny_args(cache: str, out: Path, *extra: str) -> list[str]:
    return ["--backbone", "tiny_cnn", "--no-pretrained", "--cache-dir", cache, "--out", str(out),
            "--device", "cpu", "--precision", "fp32", *extra]


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A saved tiny_cnn bundle (random weights, two classes) without any training."""
    import torch

    from tunevision.models.bundle import BundleMeta, save_bundle
    from tunevision.models.backbones import build_classifier, create_backbone
    torch.manual_seed(0)
    b = create_backbone("tiny_cnn", pretrained=False)
    model = build_classifier(b, 2).eval()
    meta = BundleMeta("tiny_cnn", ["blue", "red"], 32, 32, list(b.mean), list(b.std), temperature=1.5)
    return save_bundle(model, meta, tmp_path / "bundle")
