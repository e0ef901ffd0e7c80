"""`SceneModel`: what `tunevision.fit(..., task="detect")` and `tunevision.load(DETECTOR)` return.

    model = tv.fit("pennfudan/", task="detect")
    found = model.predict("street.jpg")     # ScenePrediction(source=..., detections=[Detection(...), ...])
    found.plot()                            # the photo with its boxes drawn (PIL image)
    model.export("onnx")                    # checked against PyTorch on boxes and scores
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, resolve_runtime
from tunevision.data.inputs import as_list, is_single
from tunevision.data.scenes import decode_scenes
from tunevision.engine.export import Exported
from tunevision.engine.rundir import read_metrics
from tunevision.models.bundle import BundleMeta, save_bundle
from tunevision.scene.evaluate import evaluation_items, score_scenes
from tunevision.scene.export import export_scene_bundle
from tunevision.scene.predict import load_scene_bundle, predict_scenes
from tunevision.scene.train import SceneRecord


class SceneModel:
    """A fine-tuned detector or segmenter: `task`, `classes`, `scores` (validation mAP or mIoU), `history`,
    `run_dir`; `predict`, `evaluate`, `save`, `export`."""

    def __init__(self, network: torch.nn.Module, meta: BundleMeta, *, run_dir: Path | None = None,
                 scores: Any = None, history: Sequence = (), bundle: Path | None = None) -> None:
        self.network, self.meta, self.scores, self.history = network.eval(), meta, scores, list(history)
        self.run_dir = Path(run_dir) if run_dir else None
        self.bundle = bundle or (self.run_dir / "model" if self.run_dir else None)

    task = property(lambda self: self.meta.task)
    classes = property(lambda self: list(self.meta.classes))

    def __repr__(self) -> str:
        score = f", {self.scores.headline()}" if self.scores is not None else ""
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        return f"SceneModel({self.task}, {self.meta.architecture}, {len(self.classes)} classes{score}{where})"

    def predict(self, inputs: Any, *, threshold: float = 0.5):
        """One ScenePrediction for one image (a path, PIL image or uint8 array); a list for a list, folder or glob."""
        results = predict_scenes(self.network, self.meta, as_list(inputs), threshold=threshold)
        return results[0] if is_single(inputs) and len(results) == 1 else results

    def evaluate(self, data: str | Path):
        """mAP (detection) or mIoU (segmentation) on annotated data; the model's own training folder is scored on
        its held-out split only."""
        items, classes = evaluation_items(self.meta, str(data))
        samples, _ = decode_scenes(items, self.meta.image_size)
        self.scores, _ = score_scenes(self.network, self.task, samples, classes)
        return self.scores

    def save(self, path: str | Path) -> Path:
        return save_bundle(self.network, self.meta, Path(path).expanduser())

    def export(self, fmt: str = "onnx", out: str | Path | None = None, samples: list[str] | None = None):
        if samples:
            raise TunevisionError("detectors and segmenters check parity on their own held-out photos; drop --samples")
        if self.bundle is None:
            self.bundle = self.save(Path(out or ".") / "bundle")
        path, parity = export_scene_bundle(self.bundle, fmt, out)
        return Exported(path, parity)


def load_scene_model(source: str, device: str = "auto") -> SceneModel:
    """A SceneModel from a detection or segmentation bundle or its run folder."""
    network, meta = load_scene_bundle(source, resolve_runtime(device, INFERENCE_PRECISION).device)
    run_dir = Path(source).parent if (Path(source).parent / "config.yaml").is_file() else None
    return SceneModel(network, meta, run_dir=run_dir, history=read_metrics(run_dir, SceneRecord) if run_dir else [],
                      bundle=Path(source))


def scene_model_from_result(result, cfg) -> SceneModel:
    return SceneModel(result.model, result.meta, run_dir=result.run_dir, scores=result.scores,
                      history=result.history)
