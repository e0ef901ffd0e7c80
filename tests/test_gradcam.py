import numpy as np
import torch
from torch import nn

from tunevision.classify.gradcam import gradcam, overlay_heatmap
from tunevision.models.backbones import Classifier


def test_gradcam_peaks_on_the_patch_that_decides_the_class() -> None:
    # A body that responds to brightness: class 1's logit grows with the bright patch, so the map must peak there.
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        body[0].weight.fill_(0.1)
        body[0].bias.fill_(-0.05)
    model = Classifier(body, 4, 2, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
    x = torch.zeros(1, 3, 32, 32)
    x[..., 20:26, 4:10] = 1.0
    heat, c = gradcam(model, x, class_index=1)
    assert heat.shape == (32, 32) and c == 1
    y, xx = np.unravel_index(heat.argmax(), heat.shape)
    assert 18 <= y <= 27 and 2 <= xx <= 11
    assert heat[20:26, 4:10].mean() > 5 * heat[:10, 20:].mean()
    assert overlay_heatmap(np.zeros((32, 32, 3), np.uint8), heat).size == (32, 32)


def test_gradcam_works_on_a_frozen_network() -> None:
    """After auto/freeze training the body's parameters do not require grad; Grad-CAM must still explain it."""
    import torch

    from tunevision.classify.gradcam import gradcam
    from tunevision.models.backbones import build_classifier, create_backbone
    torch.manual_seed(0)
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 2).requires_grad_(False)
    heat, c = gradcam(model, torch.rand(1, 3, 32, 32))
    assert heat.shape == (32, 32) and c in (0, 1) and heat.max() == 1.0
