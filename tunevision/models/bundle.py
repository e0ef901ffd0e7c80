"""The model bundle: `model.safetensors` + `model.json`. Everything after training reads only this."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import Classifier, build_classifier, create_backbone
from tunevision.data.preprocess import Preprocessing

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
    preprocessing: str = "resize shorter side to resize_size (bicubic), centre crop image_size, /255, " \
                         "(x - mean) / std"
    tunevision_version: str = ""
    format: int = BUNDLE_FORMAT
    extra: dict = field(default_factory=dict)

    @property
    def preprocess(self) -> Preprocessing:
        return Preprocessing(self.image_size, self.resize_size, tuple(self.mean), tuple(self.std))


def _version() -> str:
    from tunevision import __version__
    return __version__


def save_bundle(model: Classifier, meta: BundleMeta, folder: Path) -> Path:
    """Write weights and metadata; each file lands atomically (temp file, then rename)."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    meta.tunevision_version = meta.tunevision_version or _version()
    state = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.contiguous().cpu()
             for k, v in model.state_dict().items()}
    tmp = folder / f".model.safetensors.tmp{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "tunevision"})
    os.replace(tmp, folder / "model.safetensors")
    tmp = folder / f".model.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(asdict(meta), indent=2))
    os.replace(tmp, folder / "model.json")
    return folder


def bundle_dir(path: str | Path) -> Path:
    """Accept a bundle folder or a run folder (which holds its bundle in `model/`)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / "model.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise TunevisionError(f"{path}: no model bundle here (expected model.json + model.safetensors, "
                          "or a run folder with model/)")


def read_meta(path: str | Path) -> BundleMeta:
    folder = bundle_dir(path)
    try:
        raw = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as e:
        raise TunevisionError(f"{folder / 'model.json'}: unreadable bundle description ({e})") from None
    known = BundleMeta.__dataclass_fields__
    return BundleMeta(**{k: v for k, v in raw.items() if k in known})


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, BundleMeta]:
    from safetensors.torch import load_file
    folder = bundle_dir(path)
    meta = read_meta(folder)
    backbone = create_backbone(meta.architecture, pretrained=False)  # weights come from the bundle: no download
    model = build_classifier(backbone, len(meta.classes), meta.dropout)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval(), meta
