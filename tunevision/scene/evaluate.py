"""Running a detector or segmenter over images, and scoring it: COCO mAP (torchmetrics over pycocotools) for
boxes, per-class IoU from a confusion matrix for semantic masks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tunevision.core.errors import TunevisionError
from tunevision.data.annotated import split_indices
from tunevision.data.annotations import read_scene_data
from tunevision.data.inputs import not_trained, trained_images
from tunevision.data.scenes import IGNORE, SceneSample, segmentation_example
from tunevision.engine.export import require
from tunevision.models.bundle import BundleMeta


@torch.no_grad()
def detect_batch(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Detections (boxes in each input image's pixels, scores, 1-based labels[, masks]) for float images."""
    model.eval()
    return [{k: v.cpu() for k, v in out.items()} for out in model(images)]


@torch.no_grad()
def segment_batch(model: nn.Module, images: list[torch.Tensor], size: tuple[int, int] | None = None
                  ) -> list[torch.Tensor]:
    """(H, W) int64 class maps for float images already at the model's scale (see scene_data.resize_shorter),
    at that scale or, given `size`, upsampled (bilinear logits) to it."""
    model.eval()
    out = []
    for image in images:
        logits = model(image[None])
        if size is not None:
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1)[0])
    return out


@dataclass
class DetectionScores:
    map: float                      # COCO mAP@0.5:0.95
    map_50: float
    map_75: float
    per_class_ap: dict[str, float | None]  # AP@0.5:0.95 per class; None: no box of it in the truth (no AP)
    per_class_ap50: dict[str, float | None]
    # class -> precision at recall 0, 0.01 .. 1, IoU 0.5 (filled when asked for curves)
    pr_curves: dict[str, list[float]] = field(default_factory=dict)

    def headline(self) -> str:
        return f"mAP@0.5 {self.map_50:.3f}  mAP@0.5:0.95 {self.map:.3f}"

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def detection_scores(preds: list[dict], targets: list[dict], classes: list[str], curves: bool = False
                     ) -> DetectionScores:
    """COCO-style box mAP of `preds` against `targets` (both with 1-based labels)."""
    require("torchmetrics", "detect")
    require("pycocotools", "detect")
    from torchmetrics.detection import MeanAveragePrecision
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, extended_summary=curves, backend="pycocotools")
    metric.update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds],
                  [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    r = metric.compute()
    ids = [int(i) for i in torch.atleast_1d(r["classes"])]
    per_class = torch.atleast_1d(r["map_per_class"]).tolist()
    ap50, pr = {}, {}
    if curves:
        precision = r["precision"]  # (iou thresholds, recall points, classes, areas, max dets); -1 = undefined
        for k, cid in enumerate(ids):
            curve = precision[0, :, k, 0, -1]
            if (curve < 0).all():  # predicted, never in the truth: COCO leaves it out of the mean
                continue
            pr[classes[cid - 1]] = [round(float(v), 4) for v in curve.clamp(min=0)]
            ap50[classes[cid - 1]] = round(float(curve.clamp(min=0).mean()), 4)
    return DetectionScores(float(r["map"]), float(r["map_50"]), float(r["map_75"]),
                           {classes[c - 1]: round(a, 4) if a >= 0 else None for c, a in zip(ids, per_class)},
                           ap50, pr)


@dataclass
class SegmentationScores:
    miou: float                  # mean IoU over background and every class the data or the predictions hold
    pixel_acc: float
    per_class_iou: dict[str, float | None]  # None: a class neither holds (no IoU)

    def headline(self) -> str:
        return f"mIoU {self.miou:.3f}  pixel accuracy {self.pixel_acc:.3f}"

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def score_text(value: float | None) -> str:
    """A class's score as tables and the CLI show it: n/a for one the validation images do not hold (no AP, no
    IoU)."""
    return "n/a" if value is None else f"{value:.3f}"


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) pixel counts; pixels marked IGNORE in `true` do not count."""
    keep = true != IGNORE
    index = true[keep] * num_classes + pred[keep]
    return torch.bincount(index.flatten(), minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor, classes: list[str]) -> SegmentationScores:
    """mIoU and pixel accuracy. A class with no pixel in the truth or the predictions has no IoU and stays out of
    the mean, as in VOC's and mmsegmentation's evaluation: counted as 0, VOC's 20 classes on images of people
    alone put a perfect model at 2/21."""
    c = confusion.double()
    union = c.sum(0) + c.sum(1) - c.diag()
    iou, present = c.diag() / union.clamp(min=1), union > 0
    names = ["background", *classes]
    return SegmentationScores(float(iou[present].mean()) if present.any() else 0.0,
                              float(c.diag().sum() / c.sum().clamp(min=1)),
                              {n: round(float(v), 4) if there else None for n, v, there in zip(names, iou, present)})


def score_scenes(model: nn.Module, task: str, samples: list[SceneSample], classes: list[str], batch: int = 4):
    """The model's scores on decoded validation samples, with precision-recall curves, and its outputs
    (detections or class maps) for the report."""
    if task == "detect":
        preds = []
        for i in range(0, len(samples), batch):
            preds += detect_batch(model, [s.image.float() / 255 for s in samples[i: i + batch]])
        targets = [{"boxes": s.boxes, "labels": s.labels} for s in samples]
        return detection_scores(preds, targets, classes, curves=True), preds
    confusion = torch.zeros(len(classes) + 1, len(classes) + 1, dtype=torch.int64)
    maps = []
    for s in samples:
        image, true = segmentation_example(s, None)
        pred = segment_batch(model, [image])[0]
        confusion += confusion_matrix(pred, true, len(classes) + 1)
        maps.append(pred)
    return segmentation_scores(confusion, classes), maps


def primary(scores) -> float:
    """The number best-checkpoint selection maximises: COCO's mAP@0.5:0.95, or mIoU."""
    return scores.map if isinstance(scores, DetectionScores) else scores.miou


def evaluation_items(meta: BundleMeta, data: str) -> tuple[list, list[str]]:
    """The annotated images to score a bundle on, labelled in the bundle's classes: all of them less those that
    trained it (the held-out split, where `data` is what it was trained on, under any name)."""
    scene = read_scene_data(data, task=meta.task)
    unknown = sorted(set(scene.classes) - set(meta.classes))
    if unknown and scene.format != "masks":
        raise TunevisionError(f"{data}: classes {unknown[:5]} are not among the model's ({', '.join(meta.classes)})")
    items, trained = scene.items, trained_images(meta.extra)
    if trained is not None:  # the images that trained it, by the files themselves whatever `data` is called now
        items = [it for it, keep in zip(items, not_trained([it.image for it in items], trained)) if keep]
    elif str(Path(data).expanduser().resolve()) == meta.extra.get("data"):  # a bundle from before train_files
        _, val = split_indices(items, meta.extra["val_fraction"], meta.extra["seed"])
        items = [items[i] for i in val]
    if not items:
        raise TunevisionError(f"{data}: every image in it trained this model; evaluate on images it has not seen")
    remap = {i: meta.classes.index(c) if c in meta.classes else 0 for i, c in enumerate(scene.classes)}
    for it in items:
        it.labels = it.labels.copy()
        for i, j in remap.items():
            it.labels[it.labels == i] = j
    return items, meta.classes
