"""The model bundle: `model.safetensors` + `model.json`. Everything after training reads only this."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from tunevision import __version__
from tunevision.core.atomic import atomic_write
from tunevision.core.errors import TunevisionError
from tunevision.data.images import FITS
from tunevision.data.preprocess import Preprocessing
from tunevision.models.backbones import Classifier, build_classifier, create_backbone

BUNDLE_FORMAT = 1


@dataclass
class BundleMeta:
    architecture: str
    classes: list[str]
    image_size: int
    resize_size: int          # shorter side before the centre crop (= decode size of the image cache)
    mean: list[float]
    std: list[float]
    temperature: float = 1.0  # divides logits before softmax (calibration); 1.0 = uncalibrated
    dropout: float = 0.0
    mode: str = ""
    task: str = "classify"    # classify | detect | segment
    interpolation: str = "bicubic"
    fit: str = "crop"         # crop: the photo's centre square; squash: the whole photo, stretched to a square
    preprocessing: str = "resize shorter side to resize_size (bicubic), centre crop image_size, /255, " \
                         "(x - mean) / std"
    tunevision_version: str = ""
    format: int = BUNDLE_FORMAT
    extra: dict = field(default_factory=dict)

    @property
    def temperatures(self) -> float | torch.Tensor:
        """What logits are divided by: the temperature, or for a multi-label model one per label."""
        if "temperatures" in self.extra:
            return torch.tensor(self.extra["temperatures"], dtype=torch.float32)
        return self.temperature

    @property
    def thresholds(self) -> list[float]:
        """A multi-label model's per-label decision thresholds (chosen on validation for F1)."""
        return list(self.extra.get("thresholds", [0.5] * len(self.classes)))

    @property
    def preprocess(self) -> Preprocessing:
        return Preprocessing(self.image_size, self.resize_size, tuple(self.mean), tuple(self.std), self.fit)


def _version() -> str:
    return __version__


def save_bundle(model: Classifier, meta: BundleMeta, folder: Path) -> Path:
    """Write weights and metadata; each file lands atomically (temp file, then rename)."""
    if folder.exists() and not folder.is_dir():
        raise TunevisionError(f"{folder}: a file, not a folder; a bundle is a folder (model.safetensors + model.json): "
                              "choose a new path")
    folder.mkdir(parents=True, exist_ok=True)
    meta.tunevision_version = meta.tunevision_version or _version()
    state = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.contiguous().cpu()
             for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "tunevision"}))
    atomic_write(folder / "model.json", lambda p: p.write_text(json.dumps(asdict(meta), indent=2)))
    return folder


def bundle_dir(path: str | Path) -> Path:
    """Accept a bundle folder or a run folder (which holds its bundle in `model/`)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / "model.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise TunevisionError(f"{path}: no model bundle here (expected model.json + model.safetensors, "
                          "or a run folder with model/)")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (key, check, what it must be): model.json is input like any other file, and a crafted one must not reach
# a constructor or an allocation (a 40,000 px input is 4.5 GiB), nor give NaN or flipped probabilities
SCHEMA: list[tuple[str, Callable[[Any], bool], str]] = [
    ("architecture", lambda v: isinstance(v, str) and 0 < len(v) < 200, "a model name"),
    ("classes", lambda v: isinstance(v, list) and 0 < len(v) <= 100_000 and all(isinstance(c, str) and c for c in v)
     and len(set(v)) == len(v), "a list of distinct class names"),
    ("image_size", lambda v: isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 4096, "an integer in 16..4096"),
    ("resize_size", lambda v: isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 8192, "an integer in 16..8192"),
    ("mean", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_number, v)), "three numbers"),
    ("std", lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) and x > 0 for x in v),
     "three positive numbers"),
    ("temperature", lambda v: _number(v) and 0.01 <= v <= 100, "a number in 0.01..100"),
    ("dropout", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("fit", lambda v: v in FITS, " or ".join(FITS)),
    ("task", lambda v: isinstance(v, str) and v.isidentifier(), "a task name"),
    ("extra", lambda v: isinstance(v, dict), "a mapping"),
    ("format", lambda v: isinstance(v, int) and 1 <= v <= BUNDLE_FORMAT, f"at most {BUNDLE_FORMAT} (this version's)"),
]
REQUIRED = ("architecture", "classes", "image_size", "resize_size", "mean", "std")


def read_meta(path: str | Path) -> BundleMeta:
    folder = bundle_dir(path)
    where = folder / "model.json"
    try:
        raw = json.loads(where.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise TunevisionError(f"{where}: unreadable bundle description ({str(e)[:100]})") from None
    return meta_from_dict(raw, where)


def meta_from_dict(raw: Any, where: str | Path) -> BundleMeta:
    """A bundle description checked against SCHEMA (model.json, or an ONNX export's metadata); one line naming
    the first bad field."""
    if not isinstance(raw, dict):
        raise TunevisionError(f"{where}: must hold a JSON object, not a {type(raw).__name__}; re-save the bundle")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise TunevisionError(f"{where}: no {missing[0]!r}; not a complete tunevision bundle")
    for key, ok, wanted in SCHEMA:
        if key in raw and not ok(raw[key]):
            raise TunevisionError(f"{where}: {key} must be {wanted}, got {str(raw[key])[:60]!r}")
    extra = raw.get("extra", {})
    for key, low, high in (("temperatures", 0.01, 100), ("thresholds", 0, 1)):
        values = extra.get(key)
        if values is not None and not (isinstance(values, list) and len(values) == len(raw["classes"]) and all(
                _number(v) and low <= v <= high for v in values)):
            raise TunevisionError(f"{where}: extra.{key} must be one number in {low}..{high} per class")
    known = BundleMeta.__dataclass_fields__
    return BundleMeta(**{k: v for k, v in raw.items() if k in known})


def load_weights(model: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """The bundle's tensors into `model`, checked first: the file readable, every tensor present with the shape and
    dtype the architecture expects, every float finite. Any mismatch is one line naming the bundle."""
    path = folder / "model.safetensors"
    try:
        state = load_file(str(path))
    except Exception as e:  # SafetensorError (garbage, empty, a header past its size), OSError
        raise TunevisionError(f"{path}: unreadable weights ({type(e).__name__}: {str(e)[:80]}); re-save the "
                              "bundle") from None
    expected = model.state_dict()
    problem = next((f"no tensor {k!r}" for k in expected if k not in state), None) or next(
        (f"an unexpected tensor {k!r}" for k in state if k not in expected), None) or next(
        (f"{k!r} is {tuple(state[k].shape)} {state[k].dtype}, the architecture wants {tuple(v.shape)} {v.dtype}"
         for k, v in expected.items() if state[k].shape != v.shape or state[k].dtype != v.dtype), None) or next(
        (f"{k!r} holds NaN or infinite values" for k, v in state.items()
         if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if problem:
        raise TunevisionError(f"{path}: {problem}; the weights do not fit the architecture in model.json")
    model.load_state_dict(state)
    return model


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, BundleMeta]:
    folder = bundle_dir(path)
    meta = read_meta(folder)
    if meta.task not in ("classify", "multilabel"):
        raise TunevisionError(f"{folder}: a {meta.task} bundle, not a classifier")
    try:  # weights come from the bundle: no download
        backbone = create_backbone(meta.architecture, pretrained=False)
    except TunevisionError as e:
        raise TunevisionError(f"{folder / 'model.json'}: {e}") from None
    model = build_classifier(backbone, len(meta.classes), meta.dropout, multilabel=meta.task == "multilabel")
    return load_weights(model, folder).to(device).eval(), meta
