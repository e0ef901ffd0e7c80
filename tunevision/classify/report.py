"""`report.html`: one self-contained page (images embedded) that shows a run's data, training and results."""
from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from tunevision.auditing.page import run_section
from tunevision.classify.evaluate import confusion_matrix, per_class_metrics
from tunevision.classify.gradcam import gradcam, overlay_heatmap
from tunevision.classify.report_labels import label_sections
from tunevision.core.errors import TunevisionError
from tunevision.data.augment import make_pipeline
from tunevision.data.discover import discover
from tunevision.data.images import ImageError
from tunevision.data.preprocess import Preprocessing
from tunevision.engine.calibrate import expected_calibration_error, reliability
from tunevision.models.backbones import count_parameters
from tunevision.models.bundle import bundle_dir, load_bundle
from tunevision.report import plots
from tunevision.report.page import img_html, table_html, write_page

SAMPLES_PER_CLASS = 4
MAX_SAMPLES = 48  # a grid of 404 thumbnails (101 classes x 4) took 16 s to draw and showed nothing more
TOP_LOSSES = 8


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def _decode(path: str, prep: Preprocessing) -> np.ndarray | None:
    try:
        return prep.decode(path)
    except (ImageError, OSError):
        return None


def image_reader(spec: str, prep: Preprocessing) -> Callable[[str], np.ndarray | None]:
    """A sample's path (split.csv's, predictions.csv's) as the model's square, None where it cannot be read: a
    file decoded, or an archive's `NAME#i` (MNIST, CIFAR, a table of pixel rows, arrays) taken from the data the
    run read, discovered once at the first such path (the report's samples and top losses were blank for them)."""
    arrays: list = []

    def read(path: str) -> np.ndarray | None:
        _, sep, index = path.rpartition("#")
        if not (sep and index.isdigit()) or Path(path).is_file():
            return _decode(path, prep)
        if not arrays:
            try:
                arrays.append(discover(spec).arrays)
            except TunevisionError:  # the data moved since the run: the report goes without these pictures
                arrays.append(None)
        return prep.square(arrays[0][int(index)]) if arrays[0] is not None and int(index) < len(arrays[0]) else None
    return read


def top_losses_grid(model, meta, rows: list[tuple[str, str, str, float]], path: Path | None = None,
                    read: Callable[[str], np.ndarray | None] | None = None):
    """rows: (image path, actual, predicted, probability); each shown with Grad-CAM of the predicted class.
    Returns the figure, or None when no image could be read. `read`: how a path becomes a square (default: a
    file decoded)."""
    grid, labels = [], []
    prep = meta.preprocess
    read = read or (lambda image_path: _decode(image_path, prep))
    for image_path, actual, predicted, prob in rows:
        im = read(image_path)
        if im is None:
            continue
        heat, _ = gradcam(model, prep.batch(torch.from_numpy(im[None])), meta.classes.index(predicted))
        grid.append(np.asarray(overlay_heatmap(prep.crop(im), heat)))
        labels.append(f"{actual} / {predicted} / {prob:.2f}")
    return plots.image_grid(grid, labels, path) if grid else None


@dataclass
class RunFiles:
    """What a finished run wrote, read once for every section of its report."""
    run_dir: Path
    out: Path
    model: object
    meta: object
    cfg: dict
    dataset: dict
    summary: dict
    read: Callable[[str], np.ndarray | None]  # a sample's path as the model's square (`image_reader`)

    @property
    def classes(self) -> list[str]:
        return self.meta.classes


def write_report(run_dir: str | Path) -> Path:
    """Build `run_dir/report.html` and its PNGs (in `run_dir/report/`) from what the run wrote."""
    run_dir = Path(run_dir)
    model, meta = load_bundle(bundle_dir(run_dir))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    run = RunFiles(run_dir, run_dir / "report", model, meta, cfg, json.loads((run_dir / "dataset.json").read_text()),
                   json.loads((run_dir / "summary.json").read_text()),
                   image_reader(cfg["data"]["data"], meta.preprocess))
    samples = sample_images(run)
    sections = [dataset_section(run, samples), *augmentation_section(run, samples), *training_sections(run)]
    preds = _rows(run_dir / "eval" / "predictions.csv")
    multilabel = meta.task == "multilabel"
    audit = run_section(run_dir / "audit", preds, score="validation exact-match accuracy (the whole label set right)"
                        if multilabel else "validation accuracy")
    audit_sections = [audit] if audit else []
    if multilabel:
        return write_page(run_dir, [*sections, *label_sections(run, top_losses_grid), *audit_sections,
                                    model_section(run)])
    y, p = validation_labels(run, preds)
    sections += [results_section(run, y, p), *top_losses_section(run, preds), *calibration_section(run, y),
                 *audit_sections, model_section(run)]
    return write_page(run_dir, sections)


def sample_images(run: RunFiles) -> tuple[list[np.ndarray], list[str], int]:
    """A few training images per class (the first MAX_SAMPLES classes), their titles and the per-class count."""
    split, classes = _rows(run.run_dir / "split.csv"), run.classes
    samples, titles = [], []
    per_class = max(1, min(SAMPLES_PER_CLASS, MAX_SAMPLES // len(classes)))
    for c in classes[:MAX_SAMPLES]:
        for r in [r for r in split if r["split"] == "train" and c in r["label"].split(";")][:per_class]:
            im = run.read(r["path"])
            if im is not None:
                samples.append(im)
                titles.append(c)
    return samples, titles, per_class


def dataset_section(run: RunFiles, samples: tuple) -> tuple[str, str]:
    images, titles, per_class = samples
    counts, classes, out = run.dataset["counts"], run.classes, run.out
    plots.class_counts(counts, out / "class_counts.png")
    train_counts = [n for n in counts["train"].values() if n]
    warn = ""
    if train_counts and max(train_counts) > 3 * min(train_counts):
        warn = (f'<p class="warn">Class imbalance: the largest class has {max(train_counts)} training images, '
                f'the smallest {min(train_counts)}. Consider <code>--balance</code> or more data.</p>')
    thin = [c for c in classes if counts["val"].get(c, 0) == 0 or counts["train"].get(c, 0) + counts["val"].get(c, 0) < 2]
    if thin:
        warn += (f'<p class="warn">Too thin to score: {html.escape(", ".join(thin[:20]))} (under 2 images, or none '
                 "in validation); the validation scores say nothing about these classes.</p>")
    plots.image_grid(images, titles, out / "samples.jpg", columns=per_class if per_class > 1 else 8)
    skipped = _rows(run.run_dir / "skipped.csv")
    more = f" (the first {MAX_SAMPLES} classes)" if len(classes) > MAX_SAMPLES else ""
    return ("Dataset", f"<p>{html.escape(run.dataset['source'])}: {len(classes)} classes, "
            f"{run.summary['train_images']} training and {run.summary['val_images']} validation images, "
            f"{len(skipped)} skipped.</p>{warn}" + img_html(out / "class_counts.png", "images per class") +
            img_html(out / "samples.jpg", "training samples per class" + more) +
            ("<h3>Skipped files</h3>" + table_html(["file", "reason"], [[r["path"], r["reason"]]
                                                                        for r in skipped[:200]]) if skipped else ""))


def augmentation_section(run: RunFiles, samples: tuple) -> list[tuple[str, str]]:
    if not samples[0]:
        return []
    spec = run.cfg["train"]["augment"]
    pipeline = make_pipeline(spec, run.meta.image_size)
    batch = torch.from_numpy(np.repeat(samples[0][0][None], 8, 0))
    views = (pipeline(batch, torch.Generator().manual_seed(0)).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    plots.image_grid(list(views), [f"draw {i + 1}" for i in range(8)], run.out / "augmentation.jpg")
    return [("Augmentation", f"<p>Pipeline <code>{html.escape(spec)}</code>, eight random draws of one training "
             "image:</p>" + img_html(run.out / "augmentation.jpg", "augmentation preview"))]


def training_sections(run: RunFiles) -> list[tuple[str, str]]:
    metrics, summary, sections = _rows(run.run_dir / "metrics.csv"), run.summary, []
    if metrics:
        series = {k: np.array([float(r[k]) for r in metrics]) for k in metrics[0] if k != "epoch"}
        plots.training_curves(np.array([int(r["epoch"]) for r in metrics]), series, run.out / "curves.png")
        sections.append(("Training", f"<p>Mode <b>{html.escape(summary['mode'])}</b>, {summary['epochs_run']} "
                         f"epochs in {summary['seconds']:.1f} s; best validation "
                         f"{'mAP' if run.meta.task == 'multilabel' else 'accuracy'} "
                         f"{summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}.</p>" +
                         img_html(run.out / "curves.png", "loss, accuracy, learning rate and time per epoch")))
    if "plan" in summary:  # --time-budget: what was planned, and what each stage took
        plan = summary["plan"]
        rows = [[st["name"], f"{st['planned_s']:.1f}", "" if st["measured_s"] is None else f"{st['measured_s']:.1f}",
                 st["detail"]] for st in plan["stages"]]
        sections.append(("Time budget", f"<p>Plan for a {plan['budget_s']:.0f} s budget ({plan['used_s']:.0f} s spent "
                         "decoding first); the best stage by validation accuracy is the one kept.</p>" +
                         table_html(["stage", "planned s", "took s", "what"], rows)))
    if "stages" in summary:  # written before the report: the report's own time is in summary.json afterwards
        rows = [[name, f"{seconds:.1f}"] for name, seconds in summary["stages"].items()]
        sections.append(("Time", "<p>Seconds per stage of the run, up to this report.</p>" +
                         table_html(["stage", "seconds"], rows)))
    return sections


def validation_labels(run: RunFiles, preds: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(actual, predicted) class indices of the validation predictions (eval/predictions.csv's rows)."""
    index = {c: i for i, c in enumerate(run.classes)}
    return np.array([index[r["actual"]] for r in preds]), np.array([index[r["predicted"]] for r in preds])


def results_section(run: RunFiles, y: np.ndarray, p: np.ndarray) -> tuple[str, str]:
    classes = run.classes
    cm = confusion_matrix(y, p, len(classes))
    m = per_class_metrics(cm)
    plots.confusion_heatmaps(cm, classes, run.out / "confusion.png")
    pairs = sorted(((cm[i, j], classes[i], classes[j]) for i in range(len(classes)) for j in range(len(classes))
                    if i != j and cm[i, j]), reverse=True)[:5]
    table = table_html(["class", "precision", "recall", "F1", "support"],
                       [[c, f"{m['precision'][i]:.3f}", f"{m['recall'][i]:.3f}", f"{m['f1'][i]:.3f}",
                         int(m["support"][i])] for i, c in enumerate(classes)])
    confused = ("<h3>Most confused</h3>" + table_html(["actual", "predicted as", "images"],
                                                      [[a, b, n] for n, a, b in pairs]) if pairs else "")
    return ("Results", f"<p>Validation accuracy <b>{(y == p).mean():.2%}</b> ({len(y)} images).</p>" + table +
            img_html(run.out / "confusion.png", "confusion matrix") + confused)


def top_losses_section(run: RunFiles, preds: list[dict]) -> list[tuple[str, str]]:
    worst = sorted(preds, key=lambda r: -float(r["loss"]))[:TOP_LOSSES]
    if not top_losses_grid(run.model, run.meta, [(r["path"], r["actual"], r["predicted"], float(r["confidence"]))
                                                 for r in worst], run.out / "top_losses.jpg", run.read):
        return []
    return [("Top losses", "<p>The validation images with the highest loss, labelled actual / predicted / "
             "probability, with Grad-CAM for the predicted class:</p>" +
             img_html(run.out / "top_losses.jpg", "top losses with Grad-CAM"))]


def calibration_section(run: RunFiles, y: np.ndarray) -> list[tuple[str, str]]:
    logits_path, meta, summary = run.run_dir / "eval" / "val_logits.npy", run.meta, run.summary
    if not logits_path.is_file():
        return []
    logits = torch.from_numpy(np.load(logits_path))
    raw = torch.softmax(logits, 1).numpy()
    cal = torch.softmax(logits / meta.temperature, 1).numpy()
    curves = {name: (*reliability(pr, y), expected_calibration_error(pr, y))
              for name, pr in (("before", raw), (f"after (T = {meta.temperature:.2f})", cal))}
    plots.reliability_diagram(curves, run.out / "reliability.png")
    return [("Calibration", f"<p>Temperature scaling fitted on the validation logits: T = {meta.temperature:.3f}; "
             f"expected calibration error {summary.get('ece_before', 0):.4f} before, "
             f"{summary.get('ece_after', 0):.4f} after. <code>predict</code> and <code>serve</code> use the "
             "calibrated probabilities.</p>" + img_html(run.out / "reliability.png", "reliability diagrams"))]


def model_section(run: RunFiles) -> tuple[str, str]:
    meta, total = run.meta, count_parameters(run.model)[0]
    return ("Model", table_html(["", ""], [
        ["architecture", meta.architecture], ["parameters", f"{total:,}"], ["mode", meta.mode],
        ["input", f"{meta.image_size} px (resize {meta.resize_size}, "
                  f"{'centre square' if meta.fit == 'crop' else 'whole photo squashed'}, centre crop)"],
        ["mean / std", f"{[round(v, 4) for v in meta.mean]} / {[round(v, 4) for v in meta.std]}"],
        ["command", run.summary.get("command", "")], ["classes", ", ".join(meta.classes)],
        ["bundle", str(bundle_dir(run.run_dir))]]) +
        f"<h3>Config</h3><pre>{html.escape(yaml.safe_dump(run.cfg))}</pre>")
