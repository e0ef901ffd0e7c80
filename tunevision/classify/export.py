"""Export a bundle to ONNX or TorchScript, and prove on sample images that it predicts what PyTorch predicts.

The exported graph takes float images in [0, 1] (N, 3, H, W) and returns calibrated probabilities: the
normalisation and temperature are inside, and the rest of the preprocessing travels as metadata
(ONNX metadata_props and a `<name>.json` sidecar, the bundle's model.json).
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import skimage.data
import torch
from PIL import Image
from torch import nn

from tunevision.core.errors import TunevisionError
from tunevision.data.images import ImageError
from tunevision.engine.export import (
    finish_onnx,
    onnx_session,
    require,
    save_torchscript,
)
from tunevision.models.backbones import Classifier
from tunevision.models.bundle import BundleMeta, bundle_dir, load_bundle, meta_from_dict

PARITY_ATOL = 1e-4  # max |p_exported - p_torch| allowed; fp32 runtimes agree to ~1e-6 in practice


class Probabilities(nn.Module):
    """The deployable graph: normalisation, network, temperature, softmax (a multi-label model: its per-label
    temperatures and a sigmoid)."""

    def __init__(self, model: Classifier, temperature: float | torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.as_tensor(temperature, dtype=torch.float32))
        self.multilabel = bool(model.multilabel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x) / self.temperature
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


@dataclass
class Parity:
    images: int
    max_abs_diff: float
    top1_agreement: float

    @property
    def ok(self) -> bool:
        return self.top1_agreement == 1.0 and self.max_abs_diff <= PARITY_ATOL

    def describe(self) -> str:
        return (f"max |p - p_torch| = {self.max_abs_diff:.2e} (tolerance {PARITY_ATOL:.0e}), top-1 agreement "
                f"{self.top1_agreement:.0%}")


def sample_inputs(meta: BundleMeta, images: list[str] | None = None) -> torch.Tensor:
    """Preprocessed sample images for the parity check: given files, else scikit-image's real photos."""
    prep, arrays = meta.preprocess, []
    for p in images or []:
        try:
            arrays.append(prep.decode(p))
        except (ImageError, OSError) as e:
            raise TunevisionError(f"{p}: cannot use as a parity sample ({e})") from None
    if not arrays:
        for name in ("chelsea", "coffee", "astronaut", "rocket", "camera"):
            buf = io.BytesIO()
            Image.fromarray(getattr(skimage.data, name)()).save(buf, "PNG")
            arrays.append(prep.decode(buf.getvalue()))
    return prep.batch(torch.from_numpy(np.stack(arrays))).contiguous()


def _export_onnx(graph: Probabilities, example: torch.Tensor, path: Path, meta: BundleMeta) -> Callable:
    require("onnx", "export")
    require("onnxscript", "export")
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(graph, (example,), str(tmp), input_names=["input"], output_names=["probs"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=18,
                      external_data=False, verbose=False)
    finish_onnx(tmp, path, meta)
    session = onnx_session(path)
    return lambda x: session.run(None, {"input": x.numpy()})[0]


def _export_torchscript(graph: Probabilities, example: torch.Tensor, path: Path, meta: BundleMeta) -> Callable:
    loaded = save_torchscript(torch.jit.trace(graph, example), path, meta)
    return lambda x: loaded(x).detach().numpy()


EXPORTERS = {"onnx": (".onnx", _export_onnx), "torchscript": (".pt", _export_torchscript)}


def check_parity(reference: np.ndarray, exported: np.ndarray, thresholds: list[float] | None = None) -> Parity:
    """Largest probability difference, and the share of images with the same answer: the same top class, or for a
    multi-label model the same labels at its thresholds."""
    if thresholds is not None:
        t = np.asarray(thresholds)
        same = ((reference >= t) == (exported >= t)).all(1)
    else:
        same = reference.argmax(1) == exported.argmax(1)
    return Parity(len(reference), float(np.abs(reference - exported).max()), float(same.mean()))


def export_bundle(bundle: str | Path, fmt: str, out_dir: str | Path | None = None,
                  samples: list[str] | None = None) -> tuple[Path, Parity]:
    """Write `<out>/model.onnx|model.pt` + `model.json`, then compare with PyTorch; raise if they disagree."""
    if fmt not in EXPORTERS:
        raise TunevisionError(f"unknown export format {fmt!r}; choose {', '.join(EXPORTERS)}")
    folder = bundle_dir(bundle)
    model, meta = load_bundle(folder, "cpu")
    graph = Probabilities(model.float().eval(), meta.temperatures).eval()
    out = Path(out_dir) if out_dir else folder / "export"
    out.mkdir(parents=True, exist_ok=True)
    suffix, exporter = EXPORTERS[fmt]
    path = out / f"model{suffix}"
    x = sample_inputs(meta, samples)
    run_exported = exporter(graph, x[:2], path, meta)
    shutil.copyfile(folder / "model.json", out / "model.json")
    with torch.no_grad():
        reference = graph(x).numpy()
    parity = check_parity(reference, run_exported(x), meta.thresholds if meta.task == "multilabel" else None)
    (out / f"parity-{fmt}.json").write_text(json.dumps({**asdict(parity), "atol": PARITY_ATOL}, indent=2))
    if not parity.ok:
        raise TunevisionError(f"{path}: exported model disagrees with PyTorch (max |dp| {parity.max_abs_diff:.2e}, "
                              f"top-1 agreement {parity.top1_agreement:.1%}); do not deploy it")
    return path, parity


class OnnxClassifier(nn.Module):
    """An exported ONNX model behind the Classifier call signature, so predict/serve need no torch model code."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        try:
            self.session = onnx_session(path)
            props = self.session.get_modelmeta().custom_metadata_map
            raw = {k: json.loads(v) for k, v in props.items()}
        except TunevisionError:
            raise
        except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ...; json's ValueError
            raise TunevisionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:80]}); export "
                                  "it again with tunevision export") from None
        self.meta = meta_from_dict(raw, f"{path} (its metadata)")
        self.temperature_in_graph = self.meta.temperature
        self.meta.temperature = 1.0  # already applied inside the graph
        self.meta.extra.pop("temperatures", None)
        self.multilabel = self.meta.task == "multilabel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.session.run(None, {"input": x.float().contiguous().numpy()})[0]
        if self.multilabel:  # logits again, which the sigmoid of predict_probs turns back into these probabilities
            p = np.clip(probs, 1e-7, 1 - 1e-7)
            return torch.from_numpy(np.log(p) - np.log1p(-p))
        return torch.from_numpy(np.log(np.clip(probs, 1e-30, None)))  # log-probs: softmax gives probs back
