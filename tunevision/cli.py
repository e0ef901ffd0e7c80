"""The `tunevision` command. Train options are generated from the config dataclasses (one source of truth)."""
from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import TunevisionError

SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))


class FloatOrAuto(click.ParamType):
    name = "FLOAT|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


CLI_TYPES = {"float_or_auto": FloatOrAuto()}


def config_options(fn: Callable) -> Callable:
    """Add one --flag per config field (help text from the field); unset flags stay None."""
    for section, cls in reversed(SECTIONS):
        for f in reversed(dataclasses.fields(cls)):
            if not f.metadata.get("cli", True):
                continue
            flag = f.name.replace("_", "-")
            if isinstance(f.default, bool):
                decl, kind = (f"--{flag}/--no-{flag}",), None
            else:
                decl, kind = (f"--{flag}",), CLI_TYPES.get(f.metadata.get("cli_type"), type(f.default))
            fn = click.option(*decl, f"{section}__{f.name}", type=kind, default=None,
                              help=f"{f.metadata['help']} [default: {f.default!r}]")(fn)
    for name in ("name", "out"):
        f = RunConfig.__dataclass_fields__[name]
        fn = click.option(f"--{name}", name, default=None, help=f"{f.metadata['help']} [default: {f.default!r}]")(fn)
    return fn


def build_config(data: str | None, config_file: str | None, overrides: dict[str, Any]) -> RunConfig:
    raw = RunConfig.load(config_file).to_dict() if config_file else RunConfig().to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    if data:
        raw["data"]["data"] = data
    if not raw["data"]["data"]:
        raise TunevisionError("no data: give a folder of class subfolders, e.g. tunevision train photos/")
    return RunConfig.from_dict(raw)


def tta_options(fn: Callable) -> Callable:
    """--tta and its knobs, shared by evaluate and predict; the command receives `tta` (a TTA or None)."""
    fn = click.option("--tta-reduce", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
                      help="combine the views' probabilities by their mean or their (renormalised) max")(fn)
    fn = click.option("--tta-crops", default=2, show_default=True, type=click.IntRange(0),
                      help="random crops (seeded, some mirrored) added to the centre crop and its mirror")(fn)
    return click.option("--tta", is_flag=True, help="test-time augmentation: centre, mirror and --tta-crops "
                                                    "random crops, combined")(fn)


def make_tta(enabled: bool, crops: int, reduce: str):
    from .evaluate import TTA
    return TTA(crops, reduce) if enabled else None


def _run(fn: Callable[[], Any]) -> Any:
    """User errors become one red line and exit code 2, never a traceback."""
    try:
        return fn()
    except TunevisionError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="tunevision")
def main() -> None:
    """Transfer learning on images: train, evaluate and predict from a folder of photos."""


@main.command()
@click.argument("data", required=False)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (keys as in a run's config.yaml); flags override it")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), help="continue a killed run from its folder")
@config_options
def train(data: str | None, config_file: str | None, resume: str | None, **overrides: Any) -> None:
    """Train a classifier on DATA (class folders, optional train/ val/, CSV, mnist:DIR, cifar10:DIR)."""
    from .train import fit
    if resume:
        _run(lambda: fit(RunConfig(), resume_dir=Path(resume)))
    else:
        _run(lambda: fit(build_config(data, config_file, overrides)))


@main.command()
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--modes", default="finetune,scratch", show_default=True,
              help="comma-separated modes to train one after the other")
@config_options
def compare(data: str, config_file: str | None, modes: str, **overrides: Any) -> None:
    """Train the same architecture on DATA once per mode and print their accuracies side by side: by default
    pretrained fine-tuning vs training from scratch, with the same epochs and each mode's own LR."""
    from .train import compare_modes

    def go() -> None:
        cfg = build_config(data, config_file, overrides)
        rows = compare_modes(cfg, [m.strip() for m in modes.split(",") if m.strip()])
        from rich.console import Console
        from rich.table import Table
        table = Table(title=f"{cfg.model.backbone} on {data}")
        for col in ("mode", "epochs", "best val acc", "final val acc", "seconds", "run folder"):
            table.add_column(col, overflow="fold")  # run folders are long; fold them rather than cut them
        for mode, epochs, r in rows:
            table.add_row(mode, str(epochs), f"{r.best_acc:.2%}", f"{r.evaluation.accuracy:.2%}",
                          f"{r.seconds:.0f}", str(r.run_dir))
        Console().print(table)
    _run(go)


@main.command("lr-find")
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--steps", default=100, show_default=True, help="optimizer steps in the sweep")
@config_options
def lr_find(data: str, config_file: str | None, steps: int, **overrides: Any) -> None:
    """Sweep the learning rate on DATA (whole network; --mode finetune unless told), plot loss vs LR, suggest one."""
    from .train import find_lr

    def go() -> None:
        overrides["train__mode"] = overrides.get("train__mode") or "finetune"
        cfg = build_config(data, config_file, overrides)
        suggestion, plot = find_lr(cfg, steps=steps)
        click.echo(f"suggested learning rate {suggestion:.2e} (body; head x {cfg.train.head_lr_mult:g}); "
                   f"plot {plot}\nuse it: tunevision train {data} --mode {cfg.train.mode} --lr {suggestion:.2e}"
                   " (or --lr auto)")
    _run(go)


@main.command()
@click.argument("bundle")
@click.argument("data")
@tta_options
@click.option("--out", default=None, help="also write confusion_matrix.csv, per_class.csv, predictions.csv here")
@click.option("--top-losses", default=0, help="write a grid of the N highest-loss images with Grad-CAM")
@click.option("--confusion", is_flag=True, help="write the confusion matrix heat map PNG")
@click.option("--device", default="auto")
def evaluate(bundle: str, data: str, tta: bool, tta_crops: int, tta_reduce: str, out: str | None, top_losses: int,
             confusion: bool, device: str) -> None:
    """Score BUNDLE (a run folder or model folder) on DATA: accuracy, per-class metrics, confusion matrix.

    With --tta, the plain score is computed too and both are printed with their inference time."""
    from .evaluate import load_eval_set
    from .ui import RunLog

    def go() -> None:
        log = RunLog()
        eval_set = load_eval_set(bundle, data, device=device, log=log)
        augmented = make_tta(tta, tta_crops, tta_reduce)
        ev = eval_set.score(augmented)
        if augmented:
            plain = eval_set.score()
            log.info(f"without TTA: accuracy {plain.accuracy:.2%} in {plain.seconds:.2f}s; with TTA "
                     f"({len(augmented.views(8))} views, {tta_reduce}): {ev.accuracy:.2%} in {ev.seconds:.2f}s "
                     f"({(ev.accuracy - plain.accuracy) * 100:+.2f} points for {ev.seconds / plain.seconds:.1f}x "
                     "the inference time)")
        folder = Path(out or ".")
        if out:
            ev.write(folder)
        if confusion:
            from .plots import confusion_heatmaps
            confusion_heatmaps(ev.confusion, ev.classes, folder / "confusion.png")
            log.info(f"wrote {folder / 'confusion.png'}")
        if top_losses:
            from .bundle import load_bundle
            from .report import top_losses_grid
            model, meta = load_bundle(bundle)
            rows = [(p, a, pr, prob) for p, a, pr, prob, _ in ev.top_losses(top_losses)]
            top_losses_grid(model, meta, rows, folder / "top_losses.png")
            log.info(f"wrote {folder / 'top_losses.png'}")
        from rich.table import Table
        from .evaluate import per_class_metrics
        m = per_class_metrics(ev.confusion)
        table = Table(title=f"{len(ev.labels)} images, accuracy {ev.accuracy:.2%}{' (TTA)' if tta else ''}")
        for col in ("class", "precision", "recall", "f1", "support"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for i, c in enumerate(ev.classes):
            table.add_row(c, f"{m['precision'][i]:.3f}", f"{m['recall'][i]:.3f}", f"{m['f1'][i]:.3f}",
                          str(int(m["support"][i])))
        cm = Table(title="confusion matrix (rows: actual, columns: predicted)")
        cm.add_column("")
        for c in ev.classes:
            cm.add_column(c, justify="right")
        for c, row in zip(ev.classes, ev.confusion):
            cm.add_row(c, *map(str, row))
        log.console.print(table, cm)
    _run(go)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="also write predictions to this CSV")
@tta_options
@click.option("--device", default="auto")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True,
              help="bf16 is ~2x faster on AMX CPUs but may flip borderline predictions vs exported models")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="onnx: run the bundle's ONNX export (made and parity-checked on first use) on onnxruntime")
def predict(inputs: tuple[str, ...], top_k: int, as_json: bool, csv_path: str | None, tta: bool, tta_crops: int,
            tta_reduce: str, device: str, precision: str, runtime: str) -> None:
    """Predict classes for images, folders or globs: `predict RUN_OR_BUNDLE IMAGES...`.

    With no bundle first (`predict cat.jpg`), the pretrained backbone names ImageNet classes."""
    from .predict import load_predictor, predict_paths, split_model_argument
    from .runtime import resolve_runtime

    def go() -> None:
        source, items = split_model_argument(list(inputs))
        if not items:
            raise TunevisionError("no images given: tunevision predict RUN_DIR img.jpg folder/ 'glob/*.png'")
        onnx = runtime == "onnx" or bool(source and source.endswith(".onnx"))
        rt = resolve_runtime("cpu" if onnx else device, "fp32" if onnx else precision)
        model, meta = load_predictor(source, rt.device, runtime)
        preds = predict_paths(model.to(rt.device), meta, items, rt, top_k=top_k,
                              tta=make_tta(tta, tta_crops, tta_reduce))
        _print_predictions(preds, as_json, csv_path, top_k)
        if all(p.error for p in preds):
            sys.exit(1)
    _run(go)


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", default="efficientnet_lite0", show_default=True,
              help="any timm or torchvision classifier; hub weights when online")
@click.option("--weights", default=None, help="local state dict for --model (offline)")
@click.option("--top-k", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def classify(images: tuple[str, ...], model_name: str, weights: str | None, top_k: int, as_json: bool) -> None:
    """Name what is in IMAGES with the 1000 ImageNet classes of a pretrained network."""
    from .predict import imagenet_model, predict_paths
    from .runtime import INFERENCE_PRECISION, resolve_runtime

    def go() -> None:
        rt = resolve_runtime(precision=INFERENCE_PRECISION)
        model, meta = imagenet_model(model_name, weights)
        _print_predictions(predict_paths(model.to(rt.device), meta, list(images), rt, top_k=top_k), as_json,
                           None, top_k)
    _run(go)


def _scene_inputs(images: tuple[str, ...], out: str) -> tuple[list[str], Path]:
    from .predict import expand_inputs
    paths, missing = expand_inputs(list(images))
    for m in missing:
        click.secho(f"{m.path}: {m.error}", fg="yellow", err=True)
    if not paths:
        raise TunevisionError("no images found in the given paths")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return paths, folder


def _scene_run(images: tuple[str, ...], out: str, description: str, quiet: bool,
               work: Callable[[Any, str, Path], dict]) -> dict[str, dict]:
    """Open each image once and call work(image, path, out folder); unreadable files get an error entry."""
    from .images import ImageError, open_image
    from .ui import RunLog
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


@main.command()
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
    from .scene import DETECTORS, detect as run_detect, draw_detections, load_scene_model, output_path

    def go() -> None:
        model, categories, _ = load_scene_model(model_name, DETECTORS, weights=weights)

        def work(im, path: str, folder: Path) -> dict:
            found = run_detect(model, categories, im, threshold)
            target = output_path(folder, path, ".boxes.png")
            draw_detections(im, found).save(target)
            return {"output": str(target), "detections": [d.__dict__ for d in found]}

        _print_scene(_scene_run(images, out, "detecting", as_json, work), as_json, "output", lambda r: [
            f"{d['label']:>16s} {d['score']:.2f}  box {[round(v) for v in d['box']]}" for d in r["detections"]])
    _run(go)


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", default="fcn_resnet50", show_default=True,
              help="fcn_resnet50 | fcn_resnet101 | deeplabv3_resnet50 | deeplabv3_mobilenet_v3_large | "
                   "lraspp_mobilenet_v3_large")
@click.option("--weights", default=None, help="local state dict (offline)")
@click.option("--out", default="segments", show_default=True, help="folder for class maps and overlays")
@click.option("--json", "as_json", is_flag=True)
def segment(images: tuple[str, ...], model_name: str, weights: str | None, out: str, as_json: bool) -> None:
    """Colour every pixel of IMAGES by its PASCAL VOC class with a pretrained torchvision segmenter."""
    from .scene import SEGMENTERS, class_map_image, load_scene_model, output_path, overlay, pixel_fractions
    from .scene import segment as run_segment

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
    _run(go)


def _print_predictions(preds: list, as_json: bool, csv_path: str | None, top_k: int) -> None:
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "error"] + [c for i in range(1, top_k + 1) for c in (f"label{i}", f"prob{i}")])
            for p in preds:
                w.writerow([p.path, p.error] + [v for label, prob in p.top for v in (label, f"{prob:.4f}")])
    if as_json:
        click.echo(json.dumps([{"path": p.path, "error": p.error or None,
                                "top": [{"label": l, "prob": round(pr, 5)} for l, pr in p.top]} for p in preds],
                              indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table()
    table.add_column("image", overflow="fold")
    for i in range(1, max((len(p.top) for p in preds), default=0) + 1):  # a 2-class model has no #3
        table.add_column(f"#{i}")
    for p in preds:
        cells = [f"{label} {prob:.1%}" for label, prob in p.top] if not p.error else [f"[red]{p.error}[/]"]
        table.add_row(p.path, *cells)
    Console().print(table)


@main.command()
@click.argument("source")
@click.option("--augment", default="default", show_default=True, help="preset or op list, as for train")
@click.option("--size", default=224, show_default=True, help="output size of each view")
@click.option("--rows", default=2, show_default=True)
@click.option("--cols", default=4, show_default=True)
@click.option("--batch", is_flag=True, help="SOURCE is a dataset: show a real training batch with class names")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="preview.png", show_default=True)
def preview(source: str, augment: str, size: int, rows: int, cols: int, batch: bool, seed: int, out: str) -> None:
    """Show what augmentation does: one IMAGE under rows x cols random draws, or a real batch (--batch)."""
    import numpy as np
    import torch

    from . import plots
    from .augment import make_pipeline
    from .data import discover, load_images
    from .images import ImageError, decode_square

    def go() -> None:
        pipeline, n = make_pipeline(augment, size), rows * cols
        resize = round(size / 0.875)
        g = torch.Generator().manual_seed(seed)
        if batch:
            ds = discover(source, seed=seed)
            pick = [ds.train[i] for i in torch.randperm(len(ds.train), generator=g)[:n].tolist()]
            images, bad = load_images(pick, resize, cache_dir=None, arrays=ds.arrays)
            titles = [ds.classes[s.label] for s in pick if s.path not in {b.path for b in bad}]
            u8 = torch.from_numpy(np.array(images))
        else:
            try:
                u8 = torch.from_numpy(np.repeat(decode_square(source, resize)[None], n, 0))
            except (ImageError, OSError) as e:
                raise TunevisionError(f"{source}: {e}") from None
            titles = [f"draw {i + 1}" for i in range(n)]
        views = (pipeline(u8, g).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        plots.image_grid(list(views), titles, Path(out), columns=cols)
        click.echo(f"wrote {out} ({len(views)} views of {augment!r})")
    _run(go)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def report(run_dir: str) -> None:
    """(Re)write RUN_DIR/report.html: data, augmentation, curves, results, top losses, calibration, model."""
    from .report import write_report
    _run(lambda: click.echo(f"wrote {write_report(run_dir)}"))


@main.command()
@click.argument("bundle")
@click.argument("image")
@click.option("--class", "class_name", default=None, help="class to explain [default: the predicted one]")
@click.option("--out", default=None, help="output PNG [default: IMAGE_STEM.gradcam.png]")
def gradcam(bundle: str, image: str, class_name: str | None, out: str | None) -> None:
    """Write a Grad-CAM heat-map overlay: where BUNDLE looked in IMAGE for a class."""
    import torch

    from .augment import eval_view
    from .bundle import load_bundle
    from .gradcam import gradcam as run_gradcam, overlay_heatmap
    from .images import ImageError, decode_square

    def go() -> None:
        model, meta = load_bundle(bundle)
        if class_name is not None and class_name not in meta.classes:
            raise TunevisionError(f"class {class_name!r} is not one of {', '.join(meta.classes)}")
        try:
            im = decode_square(image, meta.resize_size)
        except (ImageError, OSError) as e:
            raise TunevisionError(f"{image}: {e}") from None
        heat, c = run_gradcam(model, eval_view(torch.from_numpy(im[None]), meta.image_size),
                              meta.classes.index(class_name) if class_name else None)
        top = (meta.resize_size - meta.image_size) // 2
        target = Path(out or Path(image).with_suffix("").name + ".gradcam.png")
        overlay_heatmap(im[top:top + meta.image_size, top:top + meta.image_size], heat).save(target)
        click.echo(f"wrote {target} (class {meta.classes[c]})")
    _run(go)


@main.command()
@click.argument("bundle")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True)
@click.option("--out", default=None, help="output folder [default: BUNDLE/export]")
@click.option("--samples", multiple=True, help="images for the parity check [default: scikit-image photos]")
def export(bundle: str, fmt: str, out: str | None, samples: tuple[str, ...]) -> None:
    """Export BUNDLE to ONNX or TorchScript and check parity with PyTorch on sample images."""
    from .export import PARITY_ATOL, export_bundle

    def go() -> None:
        path, parity = export_bundle(bundle, fmt, out, list(samples) or None)
        click.echo(f"wrote {path} (+ model.json)\nparity on {parity.images} images: max |p - p_torch| = "
                   f"{parity.max_abs_diff:.2e} (tolerance {PARITY_ATOL:.0e}), top-1 agreement "
                   f"{parity.top1_agreement:.0%}")
    _run(go)


@main.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="bind address (loopback unless told)")
@click.option("--port", default=8000, show_default=True)
@click.option("--max-upload-mb", default=10.0, show_default=True)
@click.option("--workers", default=1, show_default=True, help="concurrent inference slots")
@click.option("--batch/--no-batch", default=True, show_default=True,
              help="run requests that queue up while the model is busy as one batch")
def serve(model: str, host: str, port: int, max_upload_mb: float, workers: int, batch: bool) -> None:
    """Serve MODEL (bundle, run folder or .onnx) over HTTP: POST /predict, GET /health, /labels, / (web page)."""
    from .export import require
    require("fastapi", "serve")
    require("uvicorn", "serve")
    import uvicorn

    from .serve import create_app
    app = _run(lambda: create_app(model, max_upload_bytes=int(max_upload_mb * 2**20), workers=workers,
                                       batch=batch))
    uvicorn.run(app, host=host, port=port, log_level="info")


@main.command()
@click.option("--out", default="tunevision-demo", show_default=True, help="folder for the demo data and run")
def demo(out: str) -> None:
    """Train on real photos that ship with scikit-image (faces vs. non-faces), end to end, in seconds."""
    from .demo import run_demo
    _run(lambda: run_demo(Path(out)))


if __name__ == "__main__":
    main()
