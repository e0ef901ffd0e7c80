"""Detectors and segmenters built on an ImageNet backbone (offline Lite0 by default), by name, as registries.

torchvision's detection families (Faster R-CNN, RetinaNet, FCOS, Mask R-CNN) take any backbone that returns
an ordered dict of feature maps; here that is the classification backbone's stride-8/16/32 stages through a
feature pyramid. Every model takes a list of float images in [0, 1] and normalises them itself (the
statistics are the backbone's, stored in the bundle), as the classifiers do.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
import torchvision.models.detection as detection
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.segmentation.lraspp import LRASPPHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry
from tunevision.models.backbones import create_backbone
from tunevision.models.hub import load_scene_model


@dataclass(frozen=True)
class SceneSpec:
    """What a bundle needs to rebuild a dense model: the architecture's name and its shape."""
    arch: str
    backbone: str
    num_classes: int            # object classes, without background
    min_size: int               # shorter image side the model sees at evaluation
    max_size: int


class StageTaps(nn.Module):
    """A timm EfficientNet-style body run up to its stride-32 stage, returning the outputs of the stages at strides
    8, 16 and 32 (keyed by block index). The stem and the stride-2/4 stages are frozen: they are generic edges and
    the costliest to train at detection resolutions; BatchNorm is frozen throughout, as batches of a few images
    give poor statistics."""

    def __init__(self, body: nn.Module, trainable_from: int = 2) -> None:
        super().__init__()
        self.info = [f for f in body.feature_info if f["reduction"] in (8, 16, 32)]
        self.taps = [int(f["module"].split(".")[1]) for f in self.info]
        self.stem = nn.Sequential(body.conv_stem, body.bn1)
        self.blocks = body.blocks[: self.taps[-1] + 1]
        for module in (self.stem, *self.blocks[:trainable_from]):
            module.requires_grad_(False)
        self.stem, self.blocks = freeze_batch_norm_2d(self.stem), freeze_batch_norm_2d(self.blocks)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x, taps = self.stem(x), OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                taps[str(i)] = x
        return taps


def stage_taps(backbone: str, pretrained: bool, weights: str | None) -> tuple[StageTaps, tuple, tuple]:
    """(the backbone's StageTaps, its mean, its std)."""
    bb = create_backbone(backbone, pretrained=pretrained, weights=weights)
    if not hasattr(bb.body, "feature_info") or not hasattr(bb.body, "blocks"):
        raise TunevisionError(f"backbone {backbone!r} has no feature pyramid taps here; use efficientnet_lite0/1/2 "
                              "or another timm EfficientNet/MobileNet")
    return StageTaps(bb.body), bb.mean, bb.std


class PyramidBody(nn.Module):
    """The stage taps through a feature pyramid (torchvision's FPN), as its detectors take a backbone."""

    def __init__(self, trunk: StageTaps, out_channels: int = 128, pool_level: bool = True) -> None:
        super().__init__()
        self.trunk = trunk
        self.fpn = FeaturePyramidNetwork([f["num_chs"] for f in trunk.info], out_channels,
                                         extra_blocks=LastLevelMaxPool() if pool_level else None)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.trunk(x))


def _pyramid(backbone: str, pretrained: bool, weights: str | None, pool_level: bool = True
             ) -> tuple[PyramidBody, tuple, tuple]:
    trunk, mean, std = stage_taps(backbone, pretrained, weights)
    return PyramidBody(trunk, pool_level=pool_level), mean, std


class Normalized(nn.Module):
    """A segmenter's input normalisation, kept with its weights (as models.Classifier keeps its own)."""

    def __init__(self, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# Sampled boxes per image for the box head in training (torchvision: 512) and proposals kept per image at test
# time (torchvision: 1000). With 1-10 objects per photo, 256 and 500 cut a training step by 24 % and inference by
# 29 % on this CPU (Lite0 FPN at 448 px), which buys 25 % more epochs in the same time.
ROI_SAMPLES, TEST_PROPOSALS = 256, 500


def _anchors(levels: int = 4):
    return AnchorGenerator(tuple((32 * 2 ** i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)


DETECTORS: Registry[Callable[..., nn.Module]] = Registry("detector")
SEGMENTERS: Registry[Callable[..., nn.Module]] = Registry("segmenter")


def _two_stage(family: str) -> Callable[..., nn.Module]:
    """Faster R-CNN or Mask R-CNN (same region heads; Mask R-CNN adds a mask head) on the pyramid."""
    def build(spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
        body, mean, std = _pyramid(spec.backbone, pretrained, weights)
        return getattr(detection, family)(
            body, spec.num_classes + 1, min_size=spec.min_size, max_size=spec.max_size, image_mean=list(mean),
            image_std=list(std), rpn_anchor_generator=_anchors(), box_batch_size_per_image=ROI_SAMPLES,
            rpn_post_nms_top_n_test=TEST_PROPOSALS)
    return build


DETECTORS.register("fasterrcnn")(_two_stage("FasterRCNN"))
DETECTORS.register("maskrcnn")(_two_stage("MaskRCNN"))


@DETECTORS.register("fcos")
def fcos(spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    body, mean, std = _pyramid(spec.backbone, pretrained, weights)
    anchors = AnchorGenerator(tuple((32 * 2 ** i,) for i in range(4)), ((1.0,),) * 4)  # one point per location
    return FCOS(body, spec.num_classes + 1, min_size=spec.min_size, max_size=spec.max_size, image_mean=list(mean),
                image_std=list(std), anchor_generator=anchors)


class LiteASPP(Normalized):
    """LR-ASPP (the MobileNetV3 segmentation head of torchvision) on the backbone's stride-8 and stride-32
    stages: cheap enough to fine-tune on a CPU."""

    def __init__(self, trunk: StageTaps, num_classes: int, mean: tuple, std: tuple, inter_channels: int = 128) -> None:
        super().__init__(mean, std)
        self.trunk = trunk
        self.low, self.high = str(trunk.taps[0]), str(trunk.taps[-1])
        self.head = LRASPPHead(trunk.info[0]["num_chs"], trunk.info[-1]["num_chs"], num_classes + 1, inter_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, classes + 1, H, W) logits."""
        taps = self.trunk(self.normalize(x))
        out = self.head({"low": taps[self.low], "high": taps[self.high]})
        return nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PyramidSegmenter(Normalized):
    """Semantic FPN (Kirillov et al., Panoptic FPN): the pyramid's stride-8/16/32 maps upsampled to stride 8,
    summed, one 3x3 convolution and a per-pixel classifier. Sharper than LR-ASPP, whose only stride-8 input is a
    linear term."""

    def __init__(self, pyramid: PyramidBody, num_classes: int, mean: tuple, std: tuple) -> None:
        super().__init__(mean, std)
        c = pyramid.out_channels
        self.pyramid = pyramid
        self.head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, num_classes + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, classes + 1, H, W) logits."""
        levels = list(self.pyramid(self.normalize(x)).values())
        size = levels[0].shape[-2:]
        merged = levels[0]
        for level in levels[1:]:
            merged = merged + nn.functional.interpolate(level, size=size, mode="bilinear", align_corners=False)
        return nn.functional.interpolate(self.head(merged), size=x.shape[-2:], mode="bilinear", align_corners=False)


@SEGMENTERS.register("fpn")
def semantic_fpn(spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    pyramid, mean, std = _pyramid(spec.backbone, pretrained, weights, pool_level=False)
    return PyramidSegmenter(pyramid, spec.num_classes, mean, std)


@SEGMENTERS.register("lraspp")
def lraspp(spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    trunk, mean, std = stage_taps(spec.backbone, pretrained, weights)
    return LiteASPP(trunk, spec.num_classes, mean, std)


# torchvision's COCO-trained detectors: far stronger starting points when their weights are at hand (online,
# or `--weights FILE` with the state dict torchvision publishes); the class layer is replaced for the user's classes
HUB_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                 "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


def _register_hub(name: str) -> None:
    @DETECTORS.register(name)
    def hub(spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
        model, _, _ = load_scene_model(name, HUB_DETECTORS, weights=weights, pretrained=pretrained)
        heads = model.roi_heads
        heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, spec.num_classes + 1)
        if heads.mask_predictor is not None:
            heads.mask_predictor = MaskRCNNPredictor(heads.mask_predictor.conv5_mask.in_channels, 256,
                                                     spec.num_classes + 1)
        model.transform = torchvision.models.detection.transform.GeneralizedRCNNTransform(
            spec.min_size, spec.max_size, model.transform.image_mean, model.transform.image_std)
        return model


for _name in HUB_DETECTORS:
    _register_hub(_name)


def create_scene_model(task: str, spec: SceneSpec, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    return (DETECTORS if task == "detect" else SEGMENTERS).get(spec.arch)(spec, pretrained, weights)
