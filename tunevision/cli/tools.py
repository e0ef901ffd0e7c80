"""Image-level commands: detect, segment (pretrained torchvision models), preview and gradcam."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from tunevision.cli.common import run
from tunevision.core.errors import TunevisionError


def _scene_inputs(images: tuple[str, ...], out: str) -> tuple[list[str], Path]:
    from tunevision.data.inputs import NOT_FOUND, expand_inputs
    paths = []
    for item, found in expand_inputs(list(images)):
        if not found:
            click.secho(f"{item}: {NOT_FOUND}", fg="yellow", err=True)
        paths += found
    if not paths:
        raise TunevisionError("no images found in the given paths")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return paths, folder


def _scene_run(images: tuple[str, ...], out: str, description: str, quiet: bool,
               work: Callable[[Any, str, Path], dict]) -> dict[str, dict]:
    """Open each image once and call work(image, path, out folder); unreadable files get an error entry."""
    from tunevision.core.ui import RunLog
    from tunevision.data.images import ImageError, open_image
    paths, folder = _scene_inputs(images, out)
    results: dict[str, dict] = {}
    with RunLog(quiet=quiet).progress(len(paths), description) as advance:
        for p in paths:
            try:
                results[p] = work(open_image(p), p, folder)
            except ImageError as e:
                results[p] = {"error": str(e)}
            advance(1)
    return results


def _print_scene(results: dict[str, dict], as_json: bool, headline: str,
                 details: Callable[[dict], list[str]]) -> None:
    """JSON, or per image its `headline` output file (or error) and the indented `details` lines."""
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for path, r in results.items():
        click.echo(f"{path}: {r.get('error') or r[headline]}")
        for line in [] if "error" in r else details(r):
            click.echo(f"  {line}")


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", default="fasterrcnn_resnet50_fpn", show_default=True,
              help="fasterrcnn_resnet50_fpn | fasterrcnn_mobilenet_v3_large_fpn | retinanet_resnet50_fpn | "
                   "ssdlite320_mobilenet_v3_large")
@click.option("--weights", default=None, help="local state dict (offline)")
@click.option("--threshold", default=0.5, show_default=True, help="minimum score to keep a box")
@click.option("--out", default="detections", show_default=True, help="folder for the annotated PNGs")
@click.option("--json", "as_json", is_flag=True)
def detect(images: tuple[str, ...], model_name: str, weights: str | None, threshold: float, out: str,
           as_json: bool) -> None:
    """Draw labelled boxes around COCO objects in IMAGES with a pretrained torchvision detector."""
    from tunevision.models.hub import (
        DETECTORS,
        draw_detections,
        load_scene_model,
        output_path,
    )
    from tunevision.models.hub import detect as run_detect

    def go() -> None:
        model, categories, _ = load_scene_model(model_name, DETECTORS, weights=weights)

        def work(im, path: str, folder: Path) -> dict:
            found = run_detect(model, categories, im, threshold)
            target = output_path(folder, path, ".boxes.png")
            draw_detections(im, found).save(target)
            return {"output": str(target), "detections": [d.__dict__ for d in found]}

        _print_scene(_scene_run(images, out, "detecting", as_json, work), as_json, "output", lambda r: [
            f"{d['label']:>16s} {d['score']:.2f}  box {[round(v) for v in d['box']]}" for d in r["detections"]])
    run(go)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", default="fcn_resnet50", show_default=True,
              help="fcn_resnet50 | fcn_resnet101 | deeplabv3_resnet50 | deeplabv3_mobilenet_v3_large | "
                   "lraspp_mobilenet_v3_large")
@click.option("--weights", default=None, help="local state dict (offline)")
@click.option("--out", default="segments", show_default=True, help="folder for class maps and overlays")
@click.option("--json", "as_json", is_flag=True)
def segment(images: tuple[str, ...], model_name: str, weights: str | None, out: str, as_json: bool) -> None:
    """Colour every pixel of IMAGES by its PASCAL VOC class with a pretrained torchvision segmenter."""
    from tunevision.models.hub import (
        SEGMENTERS,
        class_map_image,
        load_scene_model,
        output_path,
        overlay,
        pixel_fractions,
    )
    from tunevision.models.hub import segment as run_segment

    def go() -> None:
        model, categories, entry = load_scene_model(model_name, SEGMENTERS, weights=weights)

        def work(im, path: str, folder: Path) -> dict:
            mask = run_segment(model, entry, im)
            classes, blended = output_path(folder, path, ".classes.png"), output_path(folder, path, ".overlay.png")
            class_map_image(mask, len(categories)).save(classes)
            overlay(im, mask, len(categories)).save(blended)
            return {"classes": str(classes), "overlay": str(blended), "fractions": pixel_fractions(mask, categories)}

        _print_scene(_scene_run(images, out, "segmenting", as_json, work), as_json, "overlay", lambda r: [
            f"{name:>14s} {frac:6.1%}" for name, frac in sorted(r["fractions"].items(), key=lambda kv: -kv[1])])
    run(go)


@click.command()
@click.argument("source")
@click.option("--augment", default="default", show_default=True, help="preset or op list, as for train")
@click.option("--size", default=224, show_default=True, type=click.IntRange(16, 4096), help="output size of each view")
@click.option("--rows", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--cols", default=4, show_default=True, type=click.IntRange(1, 20))
@click.option("--batch", is_flag=True, help="SOURCE is a dataset: show a real training batch with class names")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="preview.png", show_default=True)
def preview(source: str, augment: str, size: int, rows: int, cols: int, batch: bool, seed: int, out: str) -> None:
    """Show what augmentation does: one IMAGE under rows x cols random draws, or a real batch (--batch)."""
    def go() -> None:
        from tunevision.api import preview as preview_image
        from tunevision.api import show_batch
        from tunevision.core.output import writable_file
        target = writable_file(out)
        if batch:
            fig = show_batch(source, augment=augment, size=size, n=rows * cols, seed=seed)
        else:
            fig = preview_image(source, augment, size=size, n=rows * cols, columns=cols, seed=seed)
        fig.savefig(target)
        click.echo(f"wrote {target} ({rows * cols} views of {augment!r})")
    run(go)


@click.command()
@click.argument("bundle")
@click.argument("image")
@click.option("--class", "class_name", default=None, help="class to explain [default: the predicted one]")
@click.option("--out", default=None, help="output PNG [default: IMAGE_STEM.gradcam.png]")
def gradcam(bundle: str, image: str, class_name: str | None, out: str | None) -> None:
    """Write a Grad-CAM heat map over IMAGE (with the class, its probability and the colour scale): where
    BUNDLE looked for a class."""
    def go() -> None:
        from tunevision.api import load
        from tunevision.core.output import writable_file
        target = writable_file(out or Path(image).with_suffix("").name + ".gradcam.png")
        load(bundle, device="cpu").gradcam(image, class_name).savefig(target)
        click.echo(f"wrote {target}")
    run(go)
