"""Grad-CAM (Selvaraju et al. 2017) for any Classifier: where the network looked for a class."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import Classifier


def _last_spatial_output(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Run the body once, keeping the last feature map with spatial extent (the layer before pooling)."""
    maps: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: maps.append(out) if isinstance(out, torch.Tensor)
                                     and out.dim() == 4 and out.shape[-1] > 1 else None)
             for m in model.body.modules() if not list(m.children())]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    if not maps:
        raise TunevisionError("Grad-CAM needs a spatial feature map, and this backbone has none to explain")
    return logits, maps[-1]


def gradcam(model: Classifier, x: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """(heat map in [0, 1] at the input's size, explained class) for one image x of shape (1, 3, H, W)."""
    model.eval()
    with torch.enable_grad():
        # the input carries the graph, so a frozen body (requires_grad False after auto/freeze training) still
        # yields gradients at its feature map
        x = x.detach().float().requires_grad_(True)
        logits, fmap = _last_spatial_output(model, x)
        c = int(logits.argmax(1)) if class_index is None else class_index
        grads = torch.autograd.grad(logits[0, c], fmap)[0]
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * fmap).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max().clamp(min=1e-12)).detach().numpy(), c


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a jet-coloured heat map over an (H, W, 3) uint8 image."""
    import matplotlib  # here, not with the module: predicting and serving never draw (0.1 s of their start-up)
    colours = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.float32)
    return Image.fromarray((image.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8))
