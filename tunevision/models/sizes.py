"""The input size and crop of the offline backbones, known without importing timm: `tunevision train` decodes
its images in a helper process while timm and torch load (`data/early.py`), so it needs the decode size before
the backbone exists. A test checks these against the backbones themselves; a backbone missing here only decodes
after the imports, as any other does."""
from __future__ import annotations

# name -> (input side, crop_pct), as timm's pretrained configs give them
PRETRAINED_INPUT: dict[str, tuple[int, float]] = {
    "efficientnet_lite0": (224, 0.875),
    "efficientnet_lite1": (240, 0.882),
    "efficientnet_lite2": (260, 0.890),
}
