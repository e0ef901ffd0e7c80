"""The export skeleton every task shares: optional-extra checks, the ONNX session, metadata into the file, atomic
writes of ONNX and TorchScript. A task's exporter adds its graph and its parity comparison."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tunevision.core.errors import TunevisionError
from tunevision.models.bundle import BundleMeta


def require(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise TunevisionError(f"{module} is needed for this: pip install 'tunevision[{extra}]'") from None


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session whose threads sleep between runs. Spinning (ORT's default) kept both cores busy
    while torch cut and normalised the next batch: with it off, the feature passes' own img/s rose 5-15 % and the
    views' preparation ran 1.5x faster (flowers5, 2 cores)."""
    require("onnxruntime", "export")
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def finish_onnx(tmp: Path, path: Path, meta: BundleMeta) -> None:
    """The bundle's description into the ONNX file's metadata_props, then the file into place atomically."""
    import onnx
    proto = onnx.load(str(tmp))
    for key, value in asdict(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def save_torchscript(traced: torch.jit.ScriptModule, path: Path, meta: BundleMeta) -> torch.jit.ScriptModule:
    """The traced graph with the bundle's description as an extra file, written atomically; read back as a user
    would load it, for the parity check."""
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(traced, str(tmp), _extra_files={"model.json": json.dumps(asdict(meta))})
    os.replace(tmp, path)
    return torch.jit.load(str(path))


@dataclass
class Exported:
    path: Path
    parity: Any  # export.Parity: max |p - p_torch| and top-1 agreement on sample images
