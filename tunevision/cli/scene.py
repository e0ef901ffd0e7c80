"""The detection/segmentation side of `predict` and `evaluate`: boxes and masks instead of class tops."""
from __future__ import annotations

import json
from pathlib import Path

import click


def predict_scene(model: str, inputs: tuple[str, ...], *, threshold: float, out: str, as_json: bool, device: str,
                  **unused) -> None:
    """Draw what a detection/segmentation bundle finds into --out and list it (JSON with --json)."""
    from tunevision.api import load
    from tunevision.core.output import writable_dir
    from tunevision.scene.predict import write_scene_predictions
    loaded = load(model, device=device)
    rows = write_scene_predictions(loaded.predict(list(inputs), threshold=0.5 if threshold is None else threshold),
                                   writable_dir(out, "--out"))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        found = r.get("detections", r.get("pixel_fractions", {}))
        click.echo(f"{r['source']}: " + (r["error"] if "error" in r else f"{len(found)} found -> {r['output']}"))
        for d in r.get("detections", []):
            click.echo(f"  {d['label']:>16s} {d['score']:.2f}  box {[round(v) for v in d['box']]}")
        for name, share in r.get("pixel_fractions", {}).items():
            click.echo(f"  {name:>16s} {share:.1%} of the pixels")


def evaluate_scene(model, data: str, *, out: Path | None, **unused) -> None:
    """COCO mAP (or mIoU) of a SceneModel on annotated DATA, per class; with `out`, metrics.json and PR curves."""
    scores = model.evaluate(data)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(scores.to_dict(), indent=2))
        if getattr(scores, "pr_curves", None):
            from tunevision.report.plots import pr_curves
            pr_curves(scores.pr_curves, out / "pr_curves.png")
    from tunevision.scene.evaluate import score_text
    per_class = getattr(scores, "per_class_ap50", None) or getattr(scores, "per_class_iou", {})
    click.echo(scores.headline() + "".join(f"\n  {c:>16s} {score_text(v)}" for c, v in per_class.items()))
