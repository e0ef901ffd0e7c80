"""What `tunevision serve` needs of a detector or segmenter (see classify/serving.py for the protocol)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, resolve_runtime
from tunevision.data.images import to_rgb
from tunevision.models.bundle import BundleMeta
from tunevision.scene.predict import load_scene_bundle, predict_scenes


@dataclass
class SceneService:
    model: object
    meta: BundleMeta
    threshold: float
    batchable = False   # images of their own sizes: one forward pass each
    draft_size = None   # boxes are in the photo's own pixels: no DCT-domain downscaling

    @staticmethod
    def prepare(im: Image.Image) -> np.ndarray:
        return np.asarray(to_rgb(im))  # the whole photo at its own aspect ratio

    def infer(self, images: list[np.ndarray], top_k: int) -> list[dict]:
        # top_k means nothing to a detector; its threshold is the server's option
        return [{k: v for k, v in r.to_dict().items() if k != "source"}
                for r in predict_scenes(self.model, self.meta, images, threshold=self.threshold)]

    @staticmethod
    def limit(answer: dict, top_k: int) -> dict:
        return answer


def scene_service(source: str, runtime: str, threshold: float) -> SceneService:
    if runtime != "torch":
        raise TunevisionError(f"{source}: detectors and segmenters are served by PyTorch; drop --runtime")
    model, meta = load_scene_bundle(source, resolve_runtime("auto", INFERENCE_PRECISION).device)
    return SceneService(model, meta, threshold)
