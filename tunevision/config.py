"""The run configuration: one dataclass per concern, validated on creation, written to every run folder.

Each field's `help` is the CLI flag's help text too (the CLI is generated from these fields), so
options are documented once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TunevisionError

MODES = ("auto", "freeze", "finetune", "scratch")


def opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    data: str = opt("", "folder of class subfolders (optionally train/ and val/), a path,label CSV, "
                        "mnist:DIR or cifar10:DIR", cli=False)
    val_fraction: float = opt(0.2, "validation share when the data has no split (stratified, seeded)")
    image_size: int = opt(0, "training/eval input size in pixels; 0 = the backbone's own (8/7 of it for "
                             "frozen features in auto/freeze mode)")
    cache_dir: str = opt("~/.cache/tunevision", "folder for decoded images and features (safe to delete)")
    max_pixels: int = opt(89_478_485, "skip images with more pixels than this (decompression-bomb guard)")
    workers: int = opt(0, "decoding threads; 0 = one per CPU core")

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise TunevisionError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.image_size < 0 or self.image_size and self.image_size < 16:
            raise TunevisionError(f"image_size must be 0 (backbone default) or >= 16, got {self.image_size}")


@dataclass
class ModelConfig:
    backbone: str = opt("efficientnet_lite0", "registered backbone, torchvision model or timm model name")
    weights: str = opt("", "local weights: a state dict file or a tunevision bundle/run folder")
    pretrained: bool = opt(True, "start from pretrained weights (ignored by --mode scratch)")
    dropout: float = opt(0.0, "dropout before the new head")
    normalize: str = opt("backbone", "backbone (its pretraining mean/std) | data (mean/std of up to 2,000 training "
                                     "images; for scratch); stored in the bundle either way")

    def __post_init__(self) -> None:
        if self.normalize not in ("backbone", "data"):
            raise TunevisionError(f"normalize must be backbone or data, got {self.normalize!r}")


@dataclass
class TrainConfig:
    mode: str = opt("auto", "auto | freeze | finetune | scratch (see README: what each trains)")
    epochs: int = opt(0, "passes over the training set; 0 = the mode's default")
    batch_size: int = opt(32, "images per step")
    lr: float | str = opt(0.0, "body learning rate (head gets lr x head_lr_mult); 0 = the mode's default; "
                               "'auto' = the LR range test's suggestion (finetune/scratch)", cli_type="float_or_auto")
    head_lr_mult: float = opt(10.0, "head learning rate as a multiple of the body's")
    layer_decay: float = opt(0.0, "layer-wise LR decay through the body (finetune/scratch): the k-th stage below "
                                  "the top trains at lr x decay^k, e.g. 0.7; 0 = off (one body LR)")
    freeze_epochs: int = opt(40, "fine_tune recipe (finetune): first train the head alone on the frozen body's "
                                 "cached features for this many epochs, then the whole network; 0 = off")
    unfreeze: str = opt("all", "all | gradual (finetune): body stages unfreeze top-down, one share per epoch, all "
                               "trainable from the middle epoch on")
    optimizer: str = opt("adamw", "adamw | sgd (momentum 0.9)")
    schedule: str = opt("onecycle", "onecycle | cosine (with warmup)")
    weight_decay: float = opt(0.01, "decoupled weight decay")
    label_smoothing: float = opt(0.1, "label smoothing epsilon")
    augment: str = opt("default", "preset (none, light, default, strong) or ops, e.g. 'rrc(scale=0.1-1),hflip'")
    mixup: float = opt(0.0, "mixup alpha (0 = off): blend image pairs and their targets (finetune/scratch)")
    cutmix: float = opt(0.0, "cutmix alpha (0 = off): paste boxes between images (finetune/scratch)")
    sizes: str = opt("", "progressive resizing for finetune/scratch, e.g. '128,160,224': the epochs split into "
                         "equal stages at these training sizes (evaluation stays at image_size)")
    ema: float = opt(0.0, "weight EMA decay for finetune/scratch, e.g. 0.998 (0 = off); evaluated beside the raw "
                          "weights every epoch, and kept when better")
    balance: str = opt("none", "none | sampler (class-balanced sampling) | weights (class-weighted loss)")
    tensorboard: bool = opt(False, "also write TensorBoard event files to RUN/tensorboard")
    views: int = opt(3, "augmented views of each training image cached as features (freeze/auto)")
    early_stopping: int = opt(0, "stop after this many epochs without a better validation accuracy; 0 = off")
    seed: int = opt(0, "seed for the split, augmentation and initialisation")
    compile: bool = opt(False, "torch.compile the network for finetune/scratch training (checked on one batch "
                               "first; falls back to eager with a warning). Lite0 on 2 CPU cores: 54 s to compile, "
                               "then 25.0 vs 23.5 img/s, so off by default")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps")
    precision: str = opt("auto", "auto | bf16 | fp32 (auto uses bf16 where the hardware runs it fast)")

    def __post_init__(self) -> None:
        checks = [(self.mode in MODES, f"mode must be one of {MODES}"),
                  (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
                  (self.schedule in ("onecycle", "cosine"), "schedule must be onecycle or cosine"),
                  (self.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
                  (self.batch_size > 0 and self.epochs >= 0, "batch_size and epochs must be >= 0"),
                  (self.lr == "auto" and self.mode in ("finetune", "scratch") or
                   not isinstance(self.lr, str) and self.lr >= 0,
                   "lr must be >= 0, or 'auto' with --mode finetune or scratch"),
                  (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
                  (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
                  (self.balance in ("none", "sampler", "weights"), "balance must be none, sampler or weights"),
                  (all(v >= 16 for v in self.size_schedule()), "every progressive size must be >= 16"),
                  (0 <= self.ema < 1, "ema decay must be in [0, 1)"),
                  (self.views >= 0, "views must be >= 0"),
                  (0 <= self.layer_decay <= 1, "layer_decay must be in [0, 1] (0 = off)"),
                  (self.freeze_epochs >= 0, "freeze_epochs must be >= 0"),
                  (self.unfreeze in ("all", "gradual"), "unfreeze must be all or gradual")]
        for ok, msg in checks:
            if not ok:
                raise TunevisionError(f"{msg} (got mode={self.mode}, optimizer={self.optimizer}, "
                                      f"schedule={self.schedule}, precision={self.precision})")

    def size_schedule(self) -> list[int]:
        try:
            return [int(v) for v in self.sizes.split(",") if v.strip()]
        except ValueError:
            raise TunevisionError(f"sizes must be comma-separated integers, e.g. 128,160,224; got {self.sizes!r}")

    def resolved_epochs(self) -> int:
        return self.epochs or {"auto": 40, "freeze": 40, "finetune": 8, "scratch": 30}[self.mode]

    def resolved_lr(self) -> float:
        if self.lr == "auto":
            raise ValueError("lr 'auto' is resolved by the LR range test before training")
        return float(self.lr) or {"auto": 3e-4, "freeze": 3e-4, "finetune": 2e-4, "scratch": 2e-3}[self.mode]


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = opt("runs", "parent folder of run folders")
    name: str = opt("", "run folder name; empty = <data name>-<mode>-<n>")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sections:
                known = {f.name for f in dataclasses.fields(sections[key])}
                unknown = set(value or {}) - known
                if unknown:
                    raise TunevisionError(f"config section {key!r}: unknown keys {sorted(unknown)}")
                kwargs[key] = sections[key](**(value or {}))
            elif key in ("out", "name"):
                kwargs[key] = value
            else:
                raise TunevisionError(f"config: unknown key {key!r}; expected data, model, train, out, name")
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError) as e:
            raise TunevisionError(f"{path}: cannot read config ({e})") from None
