"""Export a detection or segmentation bundle to ONNX or TorchScript, with a parity check on boxes and scores.

Both graphs take images resized so that their shorter side is the bundle's `image_size` (scene_data.
resize_shorter: PIL bilinear), as float RGB in [0, 1]; normalisation is inside. The detector graph takes one
image (3, H, W) and returns boxes (in that image's pixels), labels (1-based: classes[label - 1]) and scores;
the segmenter graph takes (1, 3, H, W) and returns the (1, H, W) class map. Both are traced (torchvision's own
ONNX path for its detectors).
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import skimage.data
import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou
from torchvision.transforms.v2.functional import pil_to_tensor

from tunevision.core.errors import TunevisionError
from tunevision.data.scenes import resize_shorter
from tunevision.engine.export import (
    finish_onnx,
    onnx_session,
    require,
    save_torchscript,
)
from tunevision.models.bundle import BundleMeta, bundle_dir
from tunevision.scene.evaluate import evaluation_items
from tunevision.scene.predict import load_scene_bundle

BOX_ATOL = 0.5      # pixels a matched box may move between PyTorch and the export
SCORE_ATOL = 1e-3
PARITY_TOP = 20     # each image's highest-scoring detections must appear in both


class DetectorGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["labels"], out["scores"]


class SegmenterGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(1)


@dataclass
class SceneParity:
    images: int
    compared: int        # PyTorch's top PARITY_TOP detections per image (pixels, for segmentation)
    matched: int         # of those, found in the export (same label, IoU > 0.99) / pixels of the same class
    max_box_diff: float
    max_score_diff: float
    unit: str = "detections"

    @property
    def ok(self) -> bool:
        return self.matched == self.compared and self.max_box_diff <= BOX_ATOL and self.max_score_diff <= SCORE_ATOL

    def describe(self) -> str:
        if self.unit == "pixels":
            return f"{self.matched} of {self.compared} pixels of the same class"
        return (f"{self.matched} of {self.compared} {self.unit} matched; max box diff {self.max_box_diff:.3f}px "
                f"(tolerance {BOX_ATOL}), max score diff "
                f"{self.max_score_diff:.1e}")


def parity_images(meta: BundleMeta, count: int = 4) -> list[torch.Tensor]:
    """Photos as the exports take them (float (3, H, W), shorter side at the bundle's image_size): the first
    held-out images of the bundle's own data when it is at hand (where the model finds things), else
    scikit-image's photos."""
    try:
        photos = [Image.open(it.image).convert("RGB") for it in evaluation_items(meta, meta.extra["data"])[0][:count]]
    except (KeyError, TunevisionError, OSError):
        photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
                  for name in ("astronaut", "coffee", "chelsea", "rocket")[:count]]
    return [pil_to_tensor(resize_shorter(im, meta.image_size)[0]).float() / 255 for im in photos]


def box_parity(reference: list[tuple], exported: list[tuple]) -> SceneParity:
    """reference/exported: per image (boxes, labels, scores) as tensors."""
    compared = matched = 0
    box_diff = score_diff = 0.0
    for (rb, rl, rs), (eb, el, es) in zip(reference, exported):
        keep = torch.zeros_like(rs, dtype=torch.bool)
        keep[rs.argsort(descending=True)[:PARITY_TOP]] = True
        compared += int(keep.sum())
        if not keep.any() or len(eb) == 0:
            continue
        iou = box_iou(rb[keep], eb) * (rl[keep][:, None] == el[None, :])
        best, index = iou.max(1)
        found = best > 0.99
        matched += int(found.sum())
        if found.any():
            box_diff = max(box_diff, float((rb[keep][found] - eb[index[found]]).abs().max()))
            score_diff = max(score_diff, float((rs[keep][found] - es[index[found]]).abs().max()))
    return SceneParity(len(reference), compared, matched, box_diff, score_diff)


def mask_parity(reference: list[torch.Tensor], exported: list[torch.Tensor]) -> SceneParity:
    same = sum(int((r == e).sum()) for r, e in zip(reference, exported))
    total = sum(r.numel() for r in reference)
    # a class map may differ where two logits tie to rounding; one pixel in 10,000 still counts as agreement
    return SceneParity(len(reference), total, total if total - same <= total // 10_000 else same, 0.0, 0.0,
                       "pixels")


def _export_onnx(graph: nn.Module, task: str, example: tuple, path: Path, meta: BundleMeta) -> Callable:
    require("onnx", "export")
    tmp = path.with_name(path.name + ".tmp")
    names = ["boxes", "labels", "scores"] if task == "detect" else ["classes"]
    axes = {"image": [1, 2]} if task == "detect" else {"image": [0, 2, 3]}
    # torchvision's detectors export through the TorchScript-based exporter (the dynamo one cannot follow their
    # data-dependent shapes), at opset 17
    torch.onnx.export(graph, example, str(tmp), input_names=["image"], output_names=names, dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    finish_onnx(tmp, path, meta)
    session = onnx_session(path)
    return lambda x: [torch.from_numpy(a) for a in session.run(None, {"image": x.numpy()})]


def _export_torchscript(graph: nn.Module, task: str, example: tuple, path: Path, meta: BundleMeta) -> Callable:
    loaded = save_torchscript(torch.jit.trace(graph, example, check_trace=False), path, meta)
    return lambda x: [t.detach() for t in (loaded(x) if task == "detect" else (loaded(x),))]


EXPORTERS = {"onnx": (".onnx", _export_onnx), "torchscript": (".pt", _export_torchscript)}


def export_scene_bundle(bundle: str | Path, fmt: str, out_dir: str | Path | None = None) -> tuple[Path, SceneParity]:
    """Write `<out>/model.onnx|model.pt` + `model.json`, then compare with PyTorch on real photos; raise if they
    disagree."""
    if fmt not in EXPORTERS:
        raise TunevisionError(f"unknown export format {fmt!r}; choose {', '.join(EXPORTERS)}")
    folder = bundle_dir(bundle)
    model, meta = load_scene_bundle(folder)
    graph = (DetectorGraph if meta.task == "detect" else SegmenterGraph)(model).eval()
    out = Path(out_dir) if out_dir else folder / "export"
    out.mkdir(parents=True, exist_ok=True)
    suffix, exporter = EXPORTERS[fmt]
    path = out / f"model{suffix}"
    images = parity_images(meta)
    example = (images[0],) if meta.task == "detect" else (images[0][None],)
    with torch.no_grad(), quiet_tracer():
        run_exported = exporter(graph, meta.task, example, path, meta)
        if meta.task == "detect":
            parity = box_parity([graph(x) for x in images], [run_exported(x) for x in images])
        else:
            parity = mask_parity([graph(x[None]) for x in images], [run_exported(x[None])[0] for x in images])
    shutil.copyfile(folder / "model.json", out / "model.json")
    (out / f"parity-{fmt}.json").write_text(json.dumps({**asdict(parity), "box_atol": BOX_ATOL,
                                                        "score_atol": SCORE_ATOL}, indent=2))
    if not parity.ok:
        raise TunevisionError(f"{path}: exported model disagrees with PyTorch ({parity.describe()}); do not deploy it")
    return path, parity


@contextlib.contextmanager
def quiet_tracer():
    """The exporters' tracer warnings (about data-dependent shapes torchvision handles) are noise to a user."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
