"""The report of a detection or segmentation run: scores, precision-recall curves, validation images with true
and predicted boxes or masks, training curves, the data and the model."""
from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from tunevision.auditing.page import run_section
from tunevision.data.scenes import SceneSample
from tunevision.models.hub import draw_boxes, overlay
from tunevision.report import plots
from tunevision.report.page import img_html, table_html, write_page
from tunevision.scene.evaluate import score_text

GRID = 12           # validation images shown
SHOW_SCORE = 0.5    # predicted boxes drawn from this score up


def detection_views(samples: list[SceneSample], preds: list[dict], classes: list[str]) -> list[np.ndarray]:
    """Each image with its true boxes (green) and the predictions scoring SHOW_SCORE or more (red)."""
    views = []
    for s, p in zip(samples, preds):
        image = s.image.permute(1, 2, 0).numpy()
        image = draw_boxes(image, s.boxes, [""] * len(s.boxes), "lime")
        keep = p["scores"] >= SHOW_SCORE
        views.append(draw_boxes(image, p["boxes"][keep], [f"{classes[int(l) - 1]} {float(c):.0%}" for l, c in
                                                         zip(p["labels"][keep], p["scores"][keep])], "red"))
    return views


def mask_views(samples: list[SceneSample], maps: list[torch.Tensor], classes: list[str]) -> list[np.ndarray]:
    """Side by side: the true mask over the image, and the predicted one."""
    views = []
    for s, m in zip(samples, maps):
        image = Image.fromarray(s.image.permute(1, 2, 0).numpy())
        true = overlay(image, s.semantic().numpy().astype(np.uint8), len(classes) + 1)
        pred = overlay(image, m.numpy().astype(np.uint8), len(classes) + 1)
        views.append(np.concatenate([np.asarray(true), np.full((image.height, 8, 3), 255, np.uint8),
                                     np.asarray(pred)], 1))
    return views


def write_scene_report(run_dir: Path, model, task: str, val: list[SceneSample], outputs: list, scores, meta,
                       history: list) -> Path:
    out = run_dir / "report"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    classes, sections = meta.classes, []
    if task == "detect":
        table = table_html(["class", "AP@0.5", "AP@0.5:0.95"], [[c, score_text(scores.per_class_ap50.get(c)),
                                                            score_text(scores.per_class_ap.get(c))] for c in classes])
        plots.pr_curves(scores.pr_curves, out / "pr_curves.png")
        results = (f"<p><b>{html.escape(scores.headline())}</b>, mAP@0.75 {scores.map_75:.3f} on {len(val)} held-out "
                   f"images (COCO evaluation, pycocotools via torchmetrics).</p>{table}" +
                   img_html(out / "pr_curves.png", "precision-recall curves"))
        views, caption = detection_views(val[:GRID], outputs[:GRID], classes), \
            f"true boxes green, predicted red (score >= {SHOW_SCORE:.0%})"
    else:
        table = table_html(["class", "IoU"], [[c, score_text(v)] for c, v in scores.per_class_iou.items()])
        results = f"<p><b>{html.escape(scores.headline())}</b> on {len(val)} held-out images.</p>{table}"
        views, caption = mask_views(val[:GRID], outputs[:GRID], classes), "true mask (left), predicted (right)"
    plots.image_grid(views, [Path(s.source).name for s in val[:GRID]], out / "val_images.jpg",
                     columns=3)
    sections.append(("Results", results + img_html(out / "val_images.jpg", f"validation images: {caption}")))
    epochs = np.array([r.epoch for r in history])
    fig = plots.new_figure(10, 3.2)
    for i, (title, key) in enumerate([("train loss", "train_loss"), ("val mAP@0.5:0.95" if task == "detect" else
                                      "val mIoU", "score"), ("seconds per epoch", "seconds")]):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(epochs, [getattr(r, key) for r in history], marker=".")
        ax.set(title=title, xlabel="epoch")
    plots.save_figure(fig, out / "curves.png")
    sections.append(("Training", f"<p>{len(history)} epochs; best epoch kept.</p>" +
                     img_html(out / "curves.png", "training curves")))
    skipped = list(csv.DictReader(open(run_dir / "skipped.csv"))) if (run_dir / "skipped.csv").is_file() else []
    sections.append(("Data", f"<p>{html.escape(cfg['data']['data'])} ({html.escape(meta.extra.get('format', ''))}), "
                     f"{len(val)} validation images, {len(skipped)} left out.</p>" +
                     (table_html(["file", "reason"], [[r["path"], r["reason"]] for r in skipped[:200]])
                      if skipped else "")))
    audit = run_section(run_dir / "audit", [])
    if audit:
        sections.append(audit)
    sections.append(("Model", table_html(["", ""], [
        ["task", task], ["architecture", " on ".join(filter(None, [meta.architecture,
                                                                     meta.extra["spec"]["backbone"]]))],
        ["parameters", f"{sum(p.numel() for p in model.parameters()):,}"], ["preprocessing", meta.preprocessing],
        ["classes", ", ".join(classes)]]) + f"<h3>Config</h3><pre>{html.escape(yaml.safe_dump(cfg))}</pre>"))
    return write_page(run_dir, sections)

