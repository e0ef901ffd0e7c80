"""int8 ONNX: ONNX Runtime static quantisation, calibrated on the bundle's own training images, kept only when
its validation accuracy is within `max_drop` of the fp32 export's.

QDQ format, per-channel int8 weights, uint8 activations (ORT's recommended U8S8 for x86 CPUs), MinMax ranges
from a few hundred training images seen through the bundle's preprocessing. The gate compares the two exports
on the validation split the bundle recorded (the same seeded split as training), so the decision is made on
images the calibration never saw.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tunevision.classify.export import export_bundle
from tunevision.core.errors import TunevisionError
from tunevision.data.discover import discover
from tunevision.data.sources import Sample, drop_skipped, load_images, relabel
from tunevision.engine.export import onnx_session, require
from tunevision.models.bundle import BundleMeta, bundle_dir, read_meta

INT8_MAX_DROP = 0.01  # refuse int8 when it loses more than 1 point of validation accuracy
INT8_NAME = "model.int8.onnx"


@dataclass
class Int8Report:
    path: str
    calibration_images: int
    val_images: int
    fp32_acc: float
    int8_acc: float
    top1_agreement: float
    accepted: bool


def _samples(meta: BundleMeta, data: str, split: str, n: int | None = None) -> tuple[list[Sample], object]:
    """The `split` samples of `data` (seeded as the bundle recorded), labelled with the bundle's classes."""
    ds = discover(data, val_fraction=meta.extra.get("val_fraction", 0.2), seed=meta.extra.get("seed", 0),
                  label_column=meta.extra.get("label_column", ""))
    samples = relabel(getattr(ds, split), ds.classes, meta.classes)
    if n is not None:
        samples = [samples[i] for i in sorted(torch.randperm(len(samples), generator=torch.Generator()
                                                             .manual_seed(0))[:n].tolist())]
    return samples, ds.arrays


def _batches(meta: BundleMeta, samples: list[Sample], arrays, batch: int = 32):
    images, bad = load_images(samples, meta.resize_size, cache_dir=None, arrays=arrays, fit=meta.fit)
    x = meta.preprocess.batch(torch.from_numpy(np.array(images))).contiguous().numpy()
    return [x[i:i + batch] for i in range(0, len(x), batch)], drop_skipped(samples, bad)


def _probs(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    session = onnx_session(path)
    return np.concatenate([session.run(None, {"input": b})[0] for b in batches])


def quantize_bundle(bundle: str | Path, *, out: str | Path | None = None, calibration: str | None = None,
                    n_calibration: int = 256, max_drop: float = INT8_MAX_DROP) -> Int8Report:
    """Write `<out>/model.int8.onnx` beside the fp32 export, or raise (keeping fp32) when the gate refuses it."""
    require("onnxruntime", "export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    folder = bundle_dir(bundle)
    meta = read_meta(folder)
    fp32, _ = export_bundle(folder, "onnx", out)
    own = meta.extra.get("data")
    if not (calibration or own):
        raise TunevisionError("int8 needs calibration images: this bundle does not record its training data; pass "
                              "--calibration DATA (class folders with the bundle's classes)")
    # calibrate on training images; judge on the bundle's own validation split, which calibration never sees
    calib_batches, calib_ok = _batches(meta, *_samples(meta, calibration or own, "train", n_calibration))
    val_batches, val_ok = _batches(meta, *_samples(meta, own or calibration, "val"))
    if not calib_ok or not val_ok:
        raise TunevisionError(f"{calibration or own}: no usable calibration or validation images for int8")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib_batches)

        def get_next(self):
            b = next(self.items, None)
            return None if b is None else {"input": b}

    pre, tmp = fp32.with_name(".model.pre.onnx"), fp32.with_name(f".{INT8_NAME}.tmp{os.getpid()}")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        _copy_metadata(fp32, tmp)
        labels = np.array([s.label for s in val_ok])
        p32, p8 = _probs(fp32, val_batches), _probs(tmp, val_batches)
        report = Int8Report(str(fp32.with_name(INT8_NAME)), len(calib_ok), len(val_ok),
                            float((p32.argmax(1) == labels).mean()), float((p8.argmax(1) == labels).mean()),
                            float((p32.argmax(1) == p8.argmax(1)).mean()), False)
        report.accepted = report.fp32_acc - report.int8_acc <= max_drop
        (fp32.parent / "parity-int8.json").write_text(json.dumps({**asdict(report), "max_drop": max_drop}, indent=2))
        if not report.accepted:
            raise TunevisionError(
                f"int8 refused: validation accuracy {report.int8_acc:.2%} against fp32 {report.fp32_acc:.2%} "
                f"({(report.int8_acc - report.fp32_acc) * 100:+.1f} points, {max_drop * 100:g} allowed; top-1 "
                f"agreement {report.top1_agreement:.1%}); kept the fp32 export {fp32}")
        os.replace(tmp, report.path)
        return report
    finally:
        for p in (pre, tmp, pre.with_name(pre.name + ".data")):
            p.unlink(missing_ok=True)


def _copy_metadata(source: Path, target: Path) -> None:
    """The bundle description travels in metadata_props, as in the fp32 export (OnnxClassifier reads it)."""
    import onnx
    src, dst = onnx.load(str(source)), onnx.load(str(target))
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    onnx.save(dst, str(target))


def bundle_int8(bundle: str | Path) -> str:
    """The bundle's int8 export, made (and gated) on first use or when older than the weights."""
    folder = bundle_dir(bundle)
    path = folder / "export" / INT8_NAME
    if not path.is_file() or path.stat().st_mtime < (folder / "model.safetensors").stat().st_mtime:
        quantize_bundle(folder)
    return str(path)
