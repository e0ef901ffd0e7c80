"""The multi-label parts of report.html: per-label scores with PR curves and their thresholds, the label
co-occurrence matrix (true against predicted), each label's worst false positives and false negatives with
Grad-CAM for that label, and the per-label calibration."""
from __future__ import annotations

import numpy as np

from tunevision.classify.multilabel import (
    MultiLabelEvaluation,
    pr_curve,
    read_evaluation,
)
from tunevision.report import plots
from tunevision.report.page import img_html, table_html

WORST = 3  # false positives and false negatives shown per label


def label_sections(run, top_losses_grid) -> list[tuple[str, str]]:
    """Results, worst mistakes and calibration for a multi-label run (`run`: the report's RunFiles)."""
    ev = read_evaluation(run.run_dir / "eval", run.classes, run.meta.thresholds)
    if ev is None:
        return []
    return [results_section(run, ev), *mistakes_section(run, ev, top_losses_grid), calibration_section(run)]


def results_section(run, ev: MultiLabelEvaluation) -> tuple[str, str]:
    rows = ev.per_label()
    curves = {r["label"]: (*pr_curve(ev.probs[:, k], ev.targets[:, k] > 0.5, ev.thresholds[k]), r["ap"])
              for k, r in enumerate(rows)}
    plots.label_pr_curves(curves, run.out / "pr_curves.png")
    plots.confusion_heatmaps(ev.cooccurrence(), run.classes, run.out / "cooccurrence.png")
    table = table_html(["label", "precision", "recall", "F1", "AP", "support", "threshold"],
                       [[r["label"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", f"{r['ap']:.3f}",
                         r["support"], f"{r['threshold']:.2f}"] for r in rows])
    return ("Results", f"<p>Validation ({len(ev.targets)} images): {ev.headline()}.</p>" + table +
            img_html(run.out / "pr_curves.png", "precision-recall per label, thresholds marked") +
            img_html(run.out / "cooccurrence.png", "label co-occurrence: rows the true labels, columns the "
                                                   "predicted ones (the diagonal: hits)"))


def mistakes_section(run, ev: MultiLabelEvaluation, top_losses_grid) -> list[tuple[str, str]]:
    rows = []
    for k, name in enumerate(run.classes):
        rows += [(path, f"false + {name}", name, prob) for path, prob in ev.worst(k, "fp", WORST)]
        rows += [(path, f"missed {name}", name, prob) for path, prob in ev.worst(k, "fn", WORST)]
    if not rows or not top_losses_grid(run.model, run.meta, rows, run.out / "label_mistakes.jpg", run.read):
        return []
    return [("Mistakes per label", f"<p>For each label, its {WORST} most confident false positives and its {WORST} "
             "least confident misses, with Grad-CAM for that label (what made the model see it, or not):</p>" +
             img_html(run.out / "label_mistakes.jpg", "false positives and misses per label"))]


def calibration_section(run) -> tuple[str, str]:
    extra, summary = run.meta.extra, run.summary
    rows = [[c, f"{t:.2f}", f"{h:.2f}"] for c, t, h in zip(run.classes, extra.get("temperatures", []),
                                                          np.asarray(run.meta.thresholds))]
    return ("Calibration", "<p>A temperature per label fitted on the validation logits (binary cross-entropy "
            f"{summary.get('ece_before', 0):.4f} before, {summary.get('ece_after', 0):.4f} after), then the threshold "
            "that maximises each label's F1. <code>predict</code> and <code>serve</code> use both; "
            "<code>--threshold</code> overrides the thresholds.</p>" +
            table_html(["label", "temperature", "threshold"], rows))
