"""The run configuration: one dataclass per concern, validated on creation, written to every run folder.

Each field declares its help text (also the CLI flag's help and the docstring of `tunevision.fit`), its type,
its allowed values and, where it matters, the modes that use it. Validation reads those declarations, so the
CLI, a YAML file and the Python API refuse the same values with the same one-line message.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tunevision.core.atomic import atomic_write
from tunevision.core.errors import TunevisionError

MODES = ("auto", "freeze", "finetune", "scratch", "partial")
HEAD_MODES = ("auto", "freeze")            # a linear head on frozen, cached features
CACHED_MODES = ("auto", "freeze", "partial")  # the backbone (or its trunk) runs once per image view
NETWORK_MODES = ("finetune", "scratch")    # the whole network trains
CLASSIFY = ("classify", "multilabel")      # the classification tasks: one label per image, or any number
SCENE = ("detect", "segment")              # boxes and masks


def opt(default: Any, help: str, *, check: Callable[[Any], bool] | None = None, allowed: str = "",
        choices: tuple | None = None, modes: tuple[str, ...] | None = None, tasks: tuple[str, ...] | None = None,
        by_task: dict[str, Any] | None = None, **kw: Any) -> Any:
    """A config field: `check`/`allowed` or `choices` bound its value; `modes` and `tasks` are the modes and tasks
    that use it (None: all); `by_task` gives each task's value for the placeholder default (0, 'auto')."""
    return field(default=default, metadata={"help": help, "check": check, "allowed": allowed, "choices": choices,
                                            "modes": modes, "tasks": tasks, "by_task": by_task, **kw})


def for_task(obj: Any, task: str) -> Any:
    """A config section for one task: a field the task does not use, set away from its default, is refused with one
    line; placeholders take the task's own value (`by_task`), so an explicit value always means what it says."""
    changes = {}
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if meta.get("tasks") and task not in meta["tasks"] and value != f.default:
            raise TunevisionError(f"{f.name} is used by {' and '.join(meta['tasks'])} only, and this run's task is "
                                  f"{task}; drop it")
        if meta.get("by_task") and value == f.default and task in meta["by_task"]:
            changes[f.name] = meta["by_task"][task]
    return dataclasses.replace(obj, **changes)


def _type_error(name: str, f: dataclasses.Field, value: Any) -> str | None:
    kind = f.metadata.get("cli_type") or type(f.default).__name__
    ok = {"bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "float_or_auto": value == "auto" or isinstance(value, (int, float)) and not isinstance(value, bool),
          "str": isinstance(value, str)}[kind]
    wanted = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text",
              "float_or_auto": "a number or 'auto'"}[kind]
    return None if ok else f"{name} must be {wanted}, got {value!r}"


def validate_fields(obj: Any, mode: str | None = None) -> None:
    """Type, range/choices and mode of every field of a config dataclass; the first problem raises."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        problem = _type_error(f.name, f, value)
        if problem is None and meta.get("choices") and value not in meta["choices"]:
            problem = f"{f.name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
        if problem is None and meta.get("check") and not meta["check"](value):
            problem = f"{f.name} must be {meta['allowed']}, got {value!r}"
        if problem is None and mode and meta.get("modes") and mode not in meta["modes"] and value != f.default:
            problem = (f"{f.name} is used by --mode {' or '.join(meta['modes'])} only, and this run's mode is {mode}; "
                       f"drop it or change the mode")
        if problem:
            raise TunevisionError(problem)


@dataclass
class DataConfig:
    data: str = opt("", "folder of class subfolders (optionally train/ and val/), a path,label CSV, "
                        "mnist:DIR or cifar10:DIR", cli=False)
    task: str = opt("auto", "classify | multilabel | detect | segment | auto (detect when DATA holds box "
                            "annotations or instance masks, segment when its masks are class maps, multilabel when a "
                            "CSV gives an image several labels or one-hot columns, classify otherwise); multilabel "
                            "on boxes or masks labels each image with its objects' classes",
                    choices=("auto", "classify", "multilabel", "detect", "segment"))
    images: str = opt("", "folder a CSV's image paths are relative to (default: the CSV's folder, else the image "
                          "folder beside it that holds them)", tasks=CLASSIFY)
    label_column: str = opt("", "a label table's column of labels, by its name or number (1 = the first); empty = "
                                "found by content (the one named label, class, category...)", tasks=CLASSIFY)
    val_fraction: float = opt(0.2, "validation share when the data has no split (stratified, seeded)",
                              check=lambda v: 0 < v < 1, allowed="between 0 and 1 (exclusive)")
    image_size: int = opt(0, "training/eval input size in pixels; 0 = the backbone's own (8/7 of it for "
                             "frozen features in auto/freeze mode)",
                          check=lambda v: v == 0 or 16 <= v <= 4096, allowed="0 (backbone default) or 16..4096")
    resize: str = opt("auto", "crop (the photo's centre square) or squash (all of it, stretched); auto = squash "
                              "for multi-label data", choices=("auto", "crop", "squash"), tasks=CLASSIFY)
    cache_dir: str = opt("~/.cache/tunevision", "folder for decoded images and features (safe to delete)",
                         tasks=CLASSIFY)
    max_pixels: int = opt(89_478_485, "skip images with more pixels than this (decompression-bomb guard)",
                          check=lambda v: v > 0, allowed="> 0")
    workers: int = opt(0, "decoding threads; 0 = one per CPU core", check=lambda v: v >= 0, allowed=">= 0")
    fixes: str = opt("", "an audit.csv whose action column (keep, drop, relabel:NAME) is applied before training")
    audit: bool = opt(True, "audit the data while training (label errors, duplicates, leakage, outliers, odd "
                            "images; for boxes and masks, the label sets of their objects): audit/ in the run folder "
                            "and a report section")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass
class ModelConfig:
    backbone: str = opt("efficientnet_lite0", "registered backbone, torchvision model or timm model name")
    arch: str = opt("", "detect/segment: the architecture on the backbone (detect: fasterrcnn, fcos, maskrcnn, or a "
                        "COCO-trained torchvision detector such as fasterrcnn_resnet50_fpn; segment: fpn, lraspp); "
                        "empty = the task's default (fasterrcnn, fpn)", tasks=SCENE)
    weights: str = opt("", "local weights: a state dict file or a tunevision bundle/run folder")
    pretrained: bool = opt(True, "start from pretrained weights (ignored by --mode scratch)")
    dropout: float = opt(0.0, "dropout before the new head", check=lambda v: 0 <= v < 1, allowed="in [0, 1)",
                         tasks=CLASSIFY)
    normalize: str = opt("backbone", "backbone (its pretraining mean/std) | data (mean/std of up to 2,000 training "
                                     "images; for scratch); stored in the bundle either way",
                         choices=("backbone", "data"), tasks=CLASSIFY)
    features: str = opt("auto", "what a head on the frozen body reads (mode auto or freeze, no --time-budget; other "
                                "modes read last): last (its pooled final features) | stages (also the pooled "
                                "outputs of its last four block stages; EfficientNet/MobileNet bodies); auto = stages "
                                "for multilabel where the body has them; for one label per image, whichever a head "
                                "on the eval view scores better on validation",
                        choices=("auto", "last", "stages"), tasks=CLASSIFY)

    def __post_init__(self) -> None:
        validate_fields(self)


def _sizes_ok(text: str) -> bool:
    return bool(re.fullmatch(r"\s*(\d+\s*(,\s*\d+\s*)*)?", text)) and all(
        int(v) >= 16 for v in text.split(",") if v.strip())


def _budget_ok(text: str) -> bool:
    return text == "" or bool(re.fullmatch(r"\s*\d+(\.\d+)?\s*[smh]?\s*", text)) and float(
        re.sub(r"[smh\s]", "", text)) > 0


def _device_ok(text: str) -> bool:
    return bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text))


@dataclass
class TrainConfig:
    mode: str = opt("auto", "auto | freeze | finetune | scratch | partial (see README: what each trains)", choices=MODES,
                    tasks=CLASSIFY)
    epochs: int = opt(0, "passes over the training set; 0 = the mode's default", check=lambda v: v >= 0,
                      allowed=">= 0 (0 = the mode's default)")
    batch_size: int = opt(0, "images per step; 0 = the task's default (classify 32, detect 4, segment 8)",
                          check=lambda v: v == 0 or v >= 2, allowed=">= 2 (BatchNorm needs two images per step)",
                          by_task={"classify": 32, "multilabel": 32, "detect": 4, "segment": 8})
    lr: float | str = opt(0.0, "body learning rate (head gets lr x head_lr_mult); 0 = the mode's default; "
                               "'auto' = the LR range test's suggestion (finetune/scratch)", cli_type="float_or_auto",
                          check=lambda v: v == "auto" or 0 <= v < 10, allowed="in [0, 10) or 'auto'")
    head_lr_mult: float = opt(10.0, "head learning rate as a multiple of the body's", check=lambda v: v > 0,
                              allowed="> 0", tasks=CLASSIFY)
    layer_decay: float = opt(0.0, "layer-wise LR decay through the body (finetune/scratch): the k-th stage below "
                                  "the top trains at lr x decay^k, e.g. 0.7; 0 = off (one body LR)",
                             check=lambda v: 0 <= v <= 1, allowed="in [0, 1] (0 = off)", modes=NETWORK_MODES,
                             tasks=CLASSIFY)
    freeze_epochs: int = opt(40, "fine_tune recipe (finetune): first train the head alone on the frozen body's "
                                 "cached features for this many epochs, then the whole network; 0 = off",
                             check=lambda v: v >= 0, allowed=">= 0 (0 = off)", modes=("finetune",), tasks=CLASSIFY)
    unfreeze: str = opt("all", "all | gradual (finetune): body stages unfreeze top-down, one share per epoch, all "
                               "trainable from the middle epoch on", choices=("all", "gradual"), modes=NETWORK_MODES,
                        tasks=CLASSIFY)
    train_bn: bool = opt(False, "finetune/partial: BatchNorm normalises with batch statistics and updates its running "
                                "ones; off = the pretrained statistics stay (scale and shift still train); without "
                                "pretrained weights (scratch) they always train", modes=("finetune", "partial"),
                         tasks=CLASSIFY)
    optimizer: str = opt("auto", "adamw | sgd (momentum 0.9) | auto (classify: adamw; detect, segment: sgd, as "
                                 "torchvision's detection reference)", choices=("auto", "adamw", "sgd"),
                         by_task={"classify": "adamw", "multilabel": "adamw", "detect": "sgd",
                                  "segment": "sgd"})
    schedule: str = opt("onecycle", "onecycle | cosine (with warmup)", choices=("onecycle", "cosine"), tasks=CLASSIFY)
    weight_decay: float | str = opt("auto", "weight decay (decoupled with adamw); auto = classify 0.01, detect and "
                                            "segment 1e-4 (torchvision's detection reference)", cli_type="float_or_auto",
                                    check=lambda v: v == "auto" or 0 <= v < 1, allowed="in [0, 1) or 'auto'",
                                    by_task={"classify": 0.01, "multilabel": 0.01, "detect": 1e-4, "segment": 1e-4})
    label_smoothing: float | str = opt("auto", "label smoothing epsilon; auto = 0.1 for classify, 0 for multilabel",
                                       cli_type="float_or_auto", check=lambda v: v == "auto" or 0 <= v < 1,
                                       allowed="in [0, 1) or 'auto'", by_task={"classify": 0.1, "multilabel": 0.0},
                                       tasks=CLASSIFY)
    augment: str = opt("default", "preset (none, light, default, strong) or ops, e.g. 'rrc(scale=0.1-1),hflip'",
                       tasks=CLASSIFY)
    mixup: float = opt(0.0, "mixup alpha (0 = off): blend image pairs and their targets (finetune/scratch)",
                       check=lambda v: v >= 0, allowed=">= 0 (0 = off)", modes=NETWORK_MODES, tasks=CLASSIFY)
    cutmix: float = opt(0.0, "cutmix alpha (0 = off): paste boxes between images (finetune/scratch)",
                        check=lambda v: v >= 0, allowed=">= 0 (0 = off)", modes=NETWORK_MODES, tasks=CLASSIFY)
    sizes: str = opt("", "progressive resizing for finetune/scratch, e.g. '128,160,224': the epochs split into "
                         "equal stages at these training sizes (evaluation stays at image_size)",
                     check=_sizes_ok, allowed="comma-separated integers >= 16, e.g. 128,160,224", modes=NETWORK_MODES,
                     tasks=CLASSIFY)
    ema: float = opt(0.0, "weight EMA decay for finetune/scratch, e.g. 0.998 (0 = off); evaluated beside the raw "
                          "weights every epoch, and kept when better", check=lambda v: 0 <= v < 1,
                     allowed="in [0, 1) (0 = off)", modes=NETWORK_MODES, tasks=CLASSIFY)
    balance: str = opt("none", "none | sampler (class-balanced sampling) | weights (class-weighted loss; multilabel: "
                               "positive-label weights from label frequencies)",
                       choices=("none", "sampler", "weights"), tasks=CLASSIFY)
    tensorboard: bool = opt(False, "also write TensorBoard event files to RUN/tensorboard")
    views: int = opt(3, "augmented views of each training image cached as features (freeze/auto) or activations "
                        "(partial)", check=lambda v: 0 <= v <= 100, allowed="in 0..100", modes=CACHED_MODES,
                     tasks=CLASSIFY)
    top_stages: int = opt(3, "partial: how many top stages of the body train on cached activations (Lite0 has 9; "
                             "3 = the last two block stages and the head convolution)", check=lambda v: v >= 1,
                          allowed=">= 1", modes=("partial",), tasks=CLASSIFY)
    time_budget: str = opt("", "auto: seconds for the whole run (or 90s, 2m, 1h): measures this machine, prints a plan "
                               "(augmented views, then whole-network or partial fine-tuning) that fits, keeps the "
                               "best stage; empty = the fixed recipe", check=_budget_ok,
                           allowed="seconds or a duration like 90s, 2m, 1h", modes=("auto",), tasks=CLASSIFY)
    early_stopping: int = opt(0, "stop after this many epochs without a better validation accuracy; 0 = off",
                              check=lambda v: v >= 0, allowed=">= 0 (0 = off)")
    seed: int = opt(0, "seed for the split, augmentation and initialisation", check=lambda v: 0 <= v < 2**32,
                    allowed="in 0..2^32-1")
    compile: bool = opt(False, "torch.compile the network for finetune/scratch training (checked on one batch "
                               "first; falls back to eager with a warning). Lite0 on 2 CPU cores: 54 s to compile, "
                               "then 25.0 vs 23.5 img/s, so off by default", modes=NETWORK_MODES, tasks=CLASSIFY)
    sync_bn: bool = opt(False, "under torchrun (finetune/scratch): synchronise BatchNorm statistics across processes "
                               "(GPUs only; PyTorch's SyncBatchNorm does not run on CPUs)", modes=NETWORK_MODES,
                        tasks=CLASSIFY)
    keep_checkpoint: bool = opt(False, "keep RUN/checkpoint.pt (optimizer state, for --resume) after a finished run")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps", check=_device_ok,
                      allowed="auto, cpu, cuda, cuda:N or mps")
    precision: str = opt("auto", "auto | bf16 | fp32 (auto uses bf16 where the hardware runs it fast)",
                         choices=("auto", "bf16", "fp32"))

    def __post_init__(self) -> None:
        validate_fields(self, self.mode if self.mode in MODES else None)
        if self.lr == "auto" and self.mode not in NETWORK_MODES:
            raise TunevisionError(f"lr 'auto' (the LR range test) is for --mode finetune or scratch; this run's "
                                  f"mode is {self.mode}")

    def for_mode(self, mode: str, **changes: Any) -> "TrainConfig":
        """This config in another mode: options that the mode does not use go back to their defaults."""
        unused = {f.name: f.default for f in dataclasses.fields(self)
                  if f.metadata.get("modes") and mode not in f.metadata["modes"]}
        return dataclasses.replace(self, **{**unused, "mode": mode, **changes})

    def size_schedule(self) -> list[int]:
        return [int(v) for v in self.sizes.split(",") if v.strip()]

    def resolved_epochs(self) -> int:
        return self.epochs or {"auto": 40, "freeze": 40, "finetune": 8, "scratch": 30, "partial": 6}[self.mode]

    def resolved_lr(self) -> float:
        if self.lr == "auto":
            raise TunevisionError("lr 'auto' is resolved by the LR range test before training")
        return float(self.lr) or {"auto": 3e-4, "freeze": 3e-4, "finetune": 2e-4, "scratch": 2e-3,
                                  "partial": 1e-3}[self.mode]


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
TOP_LEVEL = ("out", "name")


def option_names() -> dict[str, str]:
    """Every option's name -> its section ('' for out/name): the flat namespace of `tunevision.fit(**options)`."""
    names = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    return {**names, **{n: "" for n in TOP_LEVEL}}


def unknown_option(name: str, known: list[str], where: str) -> TunevisionError:
    close = difflib.get_close_matches(name, known, n=1)
    return TunevisionError(f"{where}: unknown option {name!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                   f"; options: {', '.join(sorted(known))}"))


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = opt("runs", "parent folder of run folders")
    name: str = opt("", "run folder name; empty = <data name>-<mode>-<n>")

    def __post_init__(self) -> None:
        for key in TOP_LEVEL:
            if not isinstance(getattr(self, key), str):
                raise TunevisionError(f"{key} must be text, got {getattr(self, key)!r}")
        if "/" in self.name or self.name in (".", ".."):
            raise TunevisionError(f"name must be a plain folder name (no '/'), got {self.name!r}; use --out for "
                                  "the parent folder")

    @property
    def batchnorm_trains(self) -> bool:
        """Whether training normalises with batch statistics: asked for, or there are no pretrained ones to keep."""
        return (self.train.train_bn or self.train.mode == "scratch"
                or not (self.model.pretrained or self.model.weights))

    def for_task(self, task: str) -> "RunConfig":
        """This config as `task` runs it (see `for_task`): placeholders resolved, unused options refused."""
        return dataclasses.replace(self, data=dataclasses.replace(for_task(self.data, task), task=task),
                                   model=for_task(self.model, task), train=for_task(self.train, task))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> "RunConfig":
        if not isinstance(d, dict):
            raise TunevisionError(f"{source}: expected a mapping with keys data, model, train, out, name; got a "
                                  f"{type(d).__name__}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in SECTIONS:
                value = value or {}
                if not isinstance(value, dict):
                    raise TunevisionError(f"{source}: section {key!r} must be a mapping, got {value!r}")
                known = [f.name for f in dataclasses.fields(SECTIONS[key])]
                for name in value:
                    if name not in known:
                        raise unknown_option(name, known, f"{source}, section {key!r}")
                kwargs[key] = SECTIONS[key](**value)
            elif key in TOP_LEVEL:
                kwargs[key] = value
            else:
                raise unknown_option(str(key), [*SECTIONS, *TOP_LEVEL], source)
        return cls(**kwargs)

    @classmethod
    def from_options(cls, data: str = "", base: "RunConfig | None" = None, **options: Any) -> "RunConfig":
        """The flat form (`epochs=3, mode="finetune"`), as `tunevision.fit` takes it, over `base` or the defaults."""
        raw = (base or cls()).to_dict()
        names = option_names()
        for name, value in options.items():
            if name not in names:
                raise unknown_option(name, list(names), "tunevision.fit")
            if names[name]:
                raw[names[name]][name] = value
            else:
                raw[name] = value
        if data:
            raw["data"]["data"] = str(data)
        return cls.from_dict(raw)

    def save(self, path: Path) -> None:
        atomic_write(path, lambda p: p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False)))

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise TunevisionError(f"{path}: cannot read config ({e.strerror or e})") from None
        except yaml.YAMLError as e:  # one line: the problem and where, not YAML's five-line excerpt
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise TunevisionError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or e}); fix the "
                                  "file or start from a run's config.yaml") from None
        return cls.from_dict(raw or {}, source=str(path))
