"""What `tunevision serve` needs of a classifier: its model loaded once, how an upload becomes its input, and its
answer for a batch of inputs. The server (serve/app.py) is the same for every task; it asks the task table."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tunevision.classify.inference import predict_probs
from tunevision.classify.predict import label_thresholds, load_scorer, top_k_predictions
from tunevision.core.runtime import INFERENCE_PRECISION, Runtime, resolve_runtime
from tunevision.models.bundle import BundleMeta


@dataclass
class ClassifierService:
    model: object
    meta: BundleMeta
    runtime: Runtime
    batchable = True  # requests that queue up ride in one forward pass

    @property
    def draft_size(self) -> int | None:
        """JPEGs may be decoded downscaled in the DCT domain to this size (the centre crop needs no more)."""
        return self.meta.preprocess.resize_size

    def prepare(self, im: Image.Image) -> np.ndarray:
        return self.meta.preprocess.square(im)  # what Preprocessing.decode does

    def infer(self, images: list[np.ndarray], top_k: int) -> list[dict]:
        probs = predict_probs(self.model, np.stack(images), self.runtime, self.meta.image_size,
                              temperature=self.meta.temperatures)
        preds = top_k_predictions(probs, self.meta.classes, [""] * len(probs), top_k, label_thresholds(self.meta))
        return [{k: v for k, v in p.to_dict().items() if k not in ("path", "error")} for p in preds]

    @staticmethod
    def limit(answer: dict, top_k: int) -> dict:
        """One request's answer from a batch computed at the largest top_k of the batch."""
        return {**answer, "top": answer["top"][:top_k]}


def classifier_service(source: str, runtime: str, threshold: float) -> ClassifierService:
    """`source`: a checked model argument (predict.model_source); runtime torch | onnx | onnx-int8."""
    onnx = runtime != "torch" or source.endswith(".onnx")
    rt = resolve_runtime("cpu" if onnx else "auto", INFERENCE_PRECISION)
    model, meta = load_scorer(source, rt, runtime)
    return ClassifierService(model, meta, rt)
