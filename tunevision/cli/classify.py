"""The classification side of `predict` and `evaluate`: class tops, accuracy and the confusion matrix."""
from __future__ import annotations

from pathlib import Path

import click

from tunevision.cli.common import make_tta, print_predictions


def predict_classes(model: str, inputs: tuple[str, ...], *, top_k: int, as_json: bool, csv_path: str | None,
                    tta: bool, tta_crops: int, tta_reduce: str, device: str, precision: str, runtime: str,
                    threshold: float | None = None, **unused) -> None:
    from tunevision.classify.predict import load_scorer, predict_paths
    from tunevision.core.runtime import resolve_runtime
    onnx = runtime == "onnx" or model.endswith(".onnx")
    rt = resolve_runtime("cpu" if onnx else device, "fp32" if onnx else precision)
    network, meta = load_scorer(model, rt, runtime)
    preds = predict_paths(network.to(rt.device), meta, list(inputs), rt, top_k=top_k,
                          tta=make_tta(tta, tta_crops, tta_reduce), threshold=threshold)
    print_predictions(preds, as_json, csv_path, top_k)


def evaluate_classes(model, data: str, *, out: Path | None, tta: bool, tta_crops: int, tta_reduce: str,
                     top_losses: int, confusion: bool, unknown_classes: str, **unused) -> None:
    """Accuracy, per-class metrics and the confusion matrix of a classifier `Model` on DATA; with --tta the plain
    score too, both with their inference time."""
    from tunevision.classify.evaluate import load_eval_set
    from tunevision.core.ui import RunLog
    log, folder = RunLog(), out or Path(".")
    eval_set = load_eval_set(model.network, model.meta, data, model.runtime, unknown_classes=unknown_classes, log=log,
                             cache=model.training_cache())
    augmented = make_tta(tta, tta_crops, tta_reduce)
    ev = eval_set.score(augmented)
    if augmented:
        plain = eval_set.score()
        log.info(f"without TTA: accuracy {plain.accuracy:.2%} in {plain.seconds:.2f}s; with TTA "
                 f"({len(augmented.views(8))} views, {tta_reduce}): {ev.accuracy:.2%} in {ev.seconds:.2f}s "
                 f"({(ev.accuracy - plain.accuracy) * 100:+.2f} points for {ev.seconds / plain.seconds:.1f}x "
                 "the inference time)")
    if out:
        ev.write(folder)
    model.use_evaluation(ev)
    if confusion:
        model.plot_confusion().savefig(folder / "confusion.png")
        log.info(f"wrote {folder / 'confusion.png'}")
    if top_losses:
        fig = model.plot_top_losses(top_losses)
        if fig is not None:
            fig.savefig(folder / "top_losses.png")
            log.info(f"wrote {folder / 'top_losses.png'}")
    click.echo(f"{ev!r}".replace("Evaluation: ", "", 1) + ("\n(TTA)" if tta else ""))
