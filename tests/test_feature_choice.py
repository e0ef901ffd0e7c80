"""`--features auto` on one label per image: a head on the eval view's stage features against one on the final
features alone, the run's head reading whichever scored better; a final-features choice keeps the head's stage
weights at zero, so the bundle's stage body gives a final-features model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import tunevision as tv
from tunevision.classify.loops import final_only
from tunevision.models.backbones import Classifier, StageFeatures


def _tiny_tappable() -> nn.Module:
    """The parts StageFeatures taps, as timm's EfficientNets name them."""
    net = nn.Module()
    net.conv_stem, net.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    net.blocks = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(5)])
    net.conv_head, net.bn2 = nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6)
    net.global_pool = nn.AdaptiveAvgPool2d(1)
    return net


def test_a_final_features_head_keeps_its_stage_weights_at_zero():
    torch.manual_seed(0)
    body = StageFeatures(_tiny_tappable()).eval()
    width = body(torch.zeros(1, 3, 8, 8)).shape[1]
    assert body.final_width == 6 and width == 4 * 4 + 6
    model = Classifier(body, width, 3, (0.5,) * 3, (0.25,) * 3)
    x, y = torch.randn(64, width), torch.randint(0, 3, (64,))
    masked = final_only(model, x)
    assert torch.all(model.head.weight[:, :width - 6] == 0) and torch.all(masked[:, :width - 6] == 0)
    opt = torch.optim.AdamW(model.head.parameters(), lr=0.1, weight_decay=0.05)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model.head(masked), y).backward()
        opt.step()
    assert torch.all(model.head.weight[:, :width - 6] == 0)  # no gradient, and decay keeps zero at zero
    assert torch.any(model.head.weight[:, width - 6:] != 0)
    assert torch.allclose(model.head(x), model.head(masked))  # the stage columns change nothing


def test_a_run_says_which_features_its_head_reads_and_its_bundle_agrees(tmp_path: Path, colour_folders: Path):
    model = tv.fit(str(colour_folders), backbone="efficientnet_lite0", epochs=4, device="cpu", audit=False,
                   cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)
    log = (Path(model.run_dir) / "train.log").read_text()
    line = next(line for line in log.splitlines() if line.startswith("features: "))
    network = tv.load(str(model.run_dir), device="cpu").network
    assert isinstance(network.body, StageFeatures)
    stage_weights = network.head.weight[:, :network.head.in_features - network.body.final_width]
    assert torch.all(stage_weights == 0) == line.startswith("features: final features")
