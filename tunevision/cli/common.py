"""What every command shares: user errors as one red line (exit 2), TTA flags, the prediction table."""
from __future__ import annotations

import csv
import json
import sys
from typing import Any, Callable

import click

from tunevision.core.errors import TunevisionError


def run(fn: Callable[[], Any]) -> Any:
    """User errors become one red line and exit code 2, never a traceback; anything else is a bug and keeps its
    traceback."""
    try:
        return fn()
    except TunevisionError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)


def tta_options(fn: Callable) -> Callable:
    """--tta and its knobs, shared by evaluate and predict."""
    fn = click.option("--tta-reduce", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
                      help="combine the views' probabilities by their mean or their (renormalised) max")(fn)
    fn = click.option("--tta-crops", default=2, show_default=True, type=click.IntRange(0, 64),
                      help="random crops (seeded, some mirrored) added to the centre crop and its mirror")(fn)
    return click.option("--tta", is_flag=True, help="test-time augmentation: centre, mirror and --tta-crops "
                                                    "random crops, combined")(fn)


def make_tta(enabled: bool, crops: int, reduce: str):
    from tunevision.classify.inference import TTA
    return TTA(crops, reduce) if enabled else None


def print_predictions(preds: list, as_json: bool, csv_path: str | None, top_k: int) -> None:
    """A table (or JSON) of predictions; also a CSV when asked. Exit code 1 when no image could be read."""
    if csv_path:
        from tunevision.core.output import writable_file
        with open(writable_file(csv_path, "predictions CSV"), "w", newline="") as f:
            w = csv.writer(f)
            multi = any(p.labels is not None for p in preds)
            w.writerow(["path", "error"] + (["labels"] if multi else []) +
                       [c for i in range(1, top_k + 1) for c in (f"label{i}", f"prob{i}")])
            for p in preds:
                w.writerow([p.path, p.error] + ([";".join(p.labels or [])] if multi else []) +
                           [v for label, prob in p.top for v in (label, f"{prob:.4f}")])
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in preds], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table
        table = Table()
        table.add_column("image", overflow="fold")
        for i in range(1, max((len(p.top) for p in preds), default=0) + 1):  # a 2-class model has no #3
            table.add_column(f"#{i}")
        for p in preds:
            cells = [f"{label} {prob:.1%}" + (" *" if p.labels and label in p.labels else "") for label, prob in p.top] \
                if not p.error else [f"[red]{p.error}[/]"]
            table.add_row(p.path, *cells)
        Console().print(table)
    if preds and all(p.error for p in preds):
        sys.exit(1)
