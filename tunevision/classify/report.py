"""`report.html`: one self-contained page (images embedded) that shows a run's data, training and results."""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from tunevision.report import plots
from tunevision.data.augment import make_pipeline
from tunevision.models.bundle import bundle_dir, load_bundle
from tunevision.engine.calibrate import expected_calibration_error, reliability
from tunevision.classify.evaluate import confusion_matrix, per_class_metrics
from tunevision.classify.gradcam import gradcam, overlay_heatmap
from tunevision.data.images import ImageError, decode_square
from tunevision.models.backbones import count_parameters
from tunevision.report.page import img_html, table_html, write_page

SAMPLES_PER_CLASS = 4
MAX_SAMPLES = 48  # a grid of 404 thumbnails (101 classes x 4) took 16 s to draw and showed nothing more
TOP_LOSSES = 8


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def _decode(path: str, size: int) -> np.ndarray | None:
    try:
        return decode_square(path, size)
    except (ImageError, OSError):
        return None


def top_losses_grid(model, meta, rows: list[tuple[str, str, str, float]], path: Path | None = None):
    """rows: (image path, actual, predicted, probability); each shown with Grad-CAM of the predicted class.
    Returns the figure, or None when no image could be read."""
    grid, labels = [], []
    prep = meta.preprocess
    for image_path, actual, predicted, prob in rows:
        im = _decode(image_path, prep.resize_size)
        if im is None:
            continue
        heat, _ = gradcam(model, prep.batch(torch.from_numpy(im[None])), meta.classes.index(predicted))
        grid.append(np.asarray(overlay_heatmap(prep.crop(im), heat)))
        labels.append(f"{actual} / {predicted} / {prob:.2f}")
    return plots.image_grid(grid, labels, path) if grid else None


def write_report(run_dir: str | Path) -> Path:
    """Build `run_dir/report.html` and its PNGs (in `run_dir/report/`) from what the run wrote."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    model, meta = load_bundle(bundle_dir(run_dir))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = json.loads((run_dir / "dataset.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    classes = meta.classes
    sections = []

    # --- data
    counts = dataset["counts"]
    plots.class_counts(counts, out / "class_counts.png")
    train_counts = [n for n in counts["train"].values() if n]
    warn = ""
    if train_counts and max(train_counts) > 3 * min(train_counts):
        warn = (f'<p class="warn">Class imbalance: the largest class has {max(train_counts)} training images, '
                f'the smallest {min(train_counts)}. Consider <code>--balance</code> or more data.</p>')
    split = _rows(run_dir / "split.csv")
    samples, titles = [], []
    per_class = max(1, min(SAMPLES_PER_CLASS, MAX_SAMPLES // len(classes)))
    for c in classes[:MAX_SAMPLES]:
        for r in [r for r in split if r["split"] == "train" and r["label"] == c][:per_class]:
            im = _decode(r["path"], meta.resize_size)
            if im is not None:
                samples.append(im)
                titles.append(c)
    plots.image_grid(samples, titles, out / "samples.png", columns=per_class if per_class > 1 else 8)
    skipped = _rows(run_dir / "skipped.csv")
    sections.append(("Dataset", f"<p>{html.escape(dataset['source'])}: {len(classes)} classes, "
                     f"{summary['train_images']} training and {summary['val_images']} validation images, "
                     f"{len(skipped)} skipped.</p>{warn}" + img_html(out / "class_counts.png", "images per class") +
                     img_html(out / "samples.png", "training samples per class" +
                                                           (f" (the first {MAX_SAMPLES} classes)" if len(classes) > MAX_SAMPLES else "")) +
                     ("<h3>Skipped files</h3>" + table_html(["file", "reason"], [[r["path"], r["reason"]] for r in
                                                                            skipped[:200]]) if skipped else "")))

    # --- augmentation
    if samples:
        pipeline = make_pipeline(cfg["train"]["augment"], meta.image_size)
        g = torch.Generator().manual_seed(0)
        batch = torch.from_numpy(np.repeat(samples[0][None], 8, 0))
        views = (pipeline(batch, g).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        plots.image_grid(list(views), [f"draw {i + 1}" for i in range(8)], out / "augmentation.png")
        sections.append(("Augmentation", f"<p>Pipeline <code>{html.escape(cfg['train']['augment'])}</code>, "
                         "eight random draws of one training image:</p>" +
                         img_html(out / "augmentation.png", "augmentation preview")))

    # --- training
    metrics = _rows(run_dir / "metrics.csv")
    if metrics:
        series = {k: np.array([float(r[k]) for r in metrics]) for k in metrics[0] if k != "epoch"}
        plots.training_curves(np.array([int(r["epoch"]) for r in metrics]), series, out / "curves.png")
        sections.append(("Training", f"<p>Mode <b>{html.escape(summary['mode'])}</b>, {summary['epochs_run']} "
                         f"epochs in {summary['seconds']:.1f} s; best validation accuracy "
                         f"{summary['best_val_acc']:.2%} at epoch {summary['best_epoch']}.</p>" +
                         img_html(out / "curves.png", "loss, accuracy, learning rate and time per epoch")))
    if "plan" in summary:  # --time-budget: what was planned, and what each stage took
        plan = summary["plan"]
        rows = [[st["name"], f"{st['planned_s']:.1f}", "" if st["measured_s"] is None else f"{st['measured_s']:.1f}",
                 st["detail"]] for st in plan["stages"]]
        sections.append(("Time budget", f"<p>Plan for a {plan['budget_s']:.0f} s budget ({plan['used_s']:.0f} s spent "
                         "decoding first); the best stage by validation accuracy is the one kept.</p>" +
                         table_html(["stage", "planned s", "took s", "what"], rows)))

    # --- results
    preds = _rows(run_dir / "eval" / "predictions.csv")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[r["actual"]] for r in preds])
    p = np.array([index[r["predicted"]] for r in preds])
    cm = confusion_matrix(y, p, len(classes))
    m = per_class_metrics(cm)
    plots.confusion_heatmaps(cm, classes, out / "confusion.png")
    pairs = sorted(((cm[i, j], classes[i], classes[j]) for i in range(len(classes)) for j in range(len(classes))
                    if i != j and cm[i, j]), reverse=True)[:5]
    sections.append(("Results", f"<p>Validation accuracy <b>{(y == p).mean():.2%}</b> "
                     f"({len(y)} images).</p>" +
                     table_html(["class", "precision", "recall", "F1", "support"],
                            [[c, f"{m['precision'][i]:.3f}", f"{m['recall'][i]:.3f}", f"{m['f1'][i]:.3f}",
                              int(m["support"][i])] for i, c in enumerate(classes)]) +
                     img_html(out / "confusion.png", "confusion matrix") +
                     ("<h3>Most confused</h3>" + table_html(["actual", "predicted as", "images"],
                                                        [[a, b, n] for n, a, b in pairs]) if pairs else "")))

    # --- top losses with Grad-CAM
    worst = sorted(preds, key=lambda r: -float(r["loss"]))[:TOP_LOSSES]
    if top_losses_grid(model, meta, [(r["path"], r["actual"], r["predicted"], float(r["confidence"]))
                                     for r in worst], out / "top_losses.png"):
        sections.append(("Top losses", "<p>The validation images with the highest loss, labelled "
                         "actual / predicted / probability, with Grad-CAM for the predicted class:</p>" +
                         img_html(out / "top_losses.png", "top losses with Grad-CAM")))

    # --- calibration
    logits_path = run_dir / "eval" / "val_logits.npy"
    if logits_path.is_file():
        logits = torch.from_numpy(np.load(logits_path))
        raw = torch.softmax(logits, 1).numpy()
        cal = torch.softmax(logits / meta.temperature, 1).numpy()
        curves = {name: (*reliability(pr, y), expected_calibration_error(pr, y))
                  for name, pr in (("before", raw), (f"after (T = {meta.temperature:.2f})", cal))}
        plots.reliability_diagram(curves, out / "reliability.png")
        sections.append(("Calibration", f"<p>Temperature scaling fitted on the validation logits: T = "
                         f"{meta.temperature:.3f}; expected calibration error {summary.get('ece_before', 0):.4f} "
                         f"before, {summary.get('ece_after', 0):.4f} after. <code>predict</code> and "
                         "<code>serve</code> use the calibrated probabilities.</p>" +
                         img_html(out / "reliability.png", "reliability diagrams")))

    # --- model
    total, _ = count_parameters(model)
    sections.append(("Model", table_html(["", ""], [
        ["architecture", meta.architecture], ["parameters", f"{total:,}"], ["mode", meta.mode],
        ["input", f"{meta.image_size} px (resize {meta.resize_size}, centre crop)"],
        ["mean / std", f"{[round(v, 4) for v in meta.mean]} / {[round(v, 4) for v in meta.std]}"],
        ["command", summary.get("command", "")], ["classes", ", ".join(classes)],
        ["bundle", str(bundle_dir(run_dir))]]) + f"<h3>Config</h3><pre>{html.escape(yaml.safe_dump(cfg))}</pre>"))

    return write_page(run_dir, sections)
