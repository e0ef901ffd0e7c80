"""`tunevision audit`, `embed` and `similar`: what is wrong with a dataset, and its features for the user's search."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tunevision.cli.common import run
from tunevision.cli.options import build_config, config_options


@click.command()
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
@config_options
def audit(data: str, config_file: str | None, **overrides: Any) -> None:
    """Find likely label errors, duplicates and train/val leakage, outliers and odd images in DATA. Writes
    audit.html, audit.json and audit.csv: edit its action column (keep, drop, relabel:NAME), then
    `tunevision train DATA --fixes audit.csv`."""
    from tunevision.classify.audit import audit as run_audit

    def go() -> None:
        result = run_audit(build_config(data, config_file, overrides))
        click.echo(f"wrote {result.folder / 'audit.csv'} and {result.folder / 'audit.html'}")
    run(go)


@click.command()
@click.argument("source")
@click.option("--out", required=True, help="FILE.npy (paths in FILE.paths.txt) or FILE.parquet")
@click.option("--in", "data", default=None, help="with a RUN: the images to embed [default: its training data]")
@click.option("--device", default="auto")
def embed(source: str, out: str, data: str | None, device: str) -> None:
    """Write features of every image: SOURCE a dataset (the pretrained backbone's, as the audit uses them) or a
    run/bundle (its trained body's, of --in DATA or its training data)."""
    from tunevision.classify import embed as emb
    from tunevision.core.config import RunConfig
    from tunevision.core.errors import TunevisionError
    from tunevision.core.ui import RunLog
    from tunevision.models.bundle import bundle_dir, load_bundle

    def go() -> None:
        log = RunLog()
        try:
            folder = bundle_dir(source)
        except TunevisionError:
            folder = None
        if folder is None:
            result = emb.embed_data(RunConfig.from_options(source, device=device), log)
        else:
            model, meta = load_bundle(folder)
            result = emb.embed_folder(model, meta, emb.bundle_data(meta, data, "embed"), log)
        written = emb.write_embeddings(result, out)
        click.echo(f"wrote {result.features.shape[0]} x {result.features.shape[1]} features: "
                   f"{', '.join(map(str, written))}")
    run(go)


@click.command()
@click.argument("run_dir")
@click.argument("image")
@click.option("--in", "data", default=None, help="images to search [default: the run's training data]")
@click.option("--top-k", default=8, show_default=True, type=click.IntRange(1, 100))
@click.option("--out", default="similar.png", show_default=True, help="contact sheet PNG")
def similar(run_dir: str, image: str, data: str | None, top_k: int, out: str) -> None:
    """The images nearest to IMAGE in RUN_DIR's feature space, printed and drawn as a contact sheet."""
    from tunevision.classify import embed as emb
    from tunevision.core.ui import RunLog
    from tunevision.models.bundle import load_bundle

    def go() -> None:
        model, meta = load_bundle(run_dir)
        hits = emb.similar(model, meta, image, emb.bundle_data(meta, data, "similar"), top_k, Path(out), RunLog())
        for path, sim in hits:
            click.echo(f"{sim:.4f}  {path}")
        click.echo(f"contact sheet {out}")
    run(go)
