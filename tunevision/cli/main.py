"""The `tunevision` command: parse options, call the Python API (`tunevision.api`), print.

Train options are generated from the config dataclasses, so each is declared (and validated) once.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tunevision.cli import audit as cli_audit
from tunevision.cli import serve as cli_serve
from tunevision.cli import tools as cli_tools
from tunevision.cli.common import print_predictions, run, tta_options
from tunevision.cli.options import build_config, config_options
from tunevision.core.allocator import keep_freed_memory
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError

if TYPE_CHECKING:
    from tunevision.core.ui import RunLog

RESUMABLE_OVERRIDES = ("train__device", "train__precision", "data__workers")  # change nothing in the result


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="tunevision")
def main() -> None:
    """Transfer learning on images: train, evaluate and predict from a folder of photos."""


@main.command()
@click.argument("data", required=False)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (keys as in a run's config.yaml); flags override it")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), help="continue a killed run from its folder")
@click.option("--nproc", type=int, default=None,
              help="train in N processes on this machine (DistributedDataParallel): runs torchrun for you")
@config_options
def train(data: str | None, config_file: str | None, resume: str | None, nproc: int | None, **overrides: Any) -> None:
    """Train a classifier on DATA (class folders, optional train/ val/, CSV, mnist:DIR, cifar10:DIR).

    Under torchrun (`torchrun --nproc_per_node N -m tunevision train ...`) it trains with DDP; see docs/scale.md."""
    def go() -> None:
        if nproc is not None:
            launch_torchrun(nproc)
        if resume:
            resume_run(Path(resume), data, config_file, overrides)
            return
        from tunevision.data.early import decoding_ahead
        from tunevision.models.sizes import PRETRAINED_INPUT

        cfg = build_config(data, config_file, overrides)
        with decoding_ahead(cfg, None if cfg.model.weights else PRETRAINED_INPUT.get(cfg.model.backbone)):
            from tunevision.tasks import fit  # about 3 s of imports, while the helper decodes

            fit(cfg, log=started_log())
    run(go)


def started_log() -> RunLog:
    from tunevision.core.ui import RunLog, process_age

    log = RunLog()
    log.startup_s = process_age()  # interpreter, imports and options: the run's stage table starts with it
    return log


def resume_run(run_dir: Path, data: str | None, config_file: str | None, overrides: dict[str, Any]) -> None:
    from tunevision.tasks import fit

    log = started_log()
    ignored = [k.partition("__")[2] or k for k, v in overrides.items() if v is not None and
               k not in RESUMABLE_OVERRIDES] + (["--config"] if config_file else [])
    if ignored:
        raise TunevisionError(f"--resume continues a run with its own config.yaml; it cannot change "
                              f"{', '.join(ignored)} (only --device, --precision, --workers). Drop them, or "
                              f"start a new run with --weights {run_dir}")
    cfg = RunConfig.load(run_dir / "config.yaml")
    changes = {k.partition("__")[2]: v for k, v in overrides.items() if v is not None}
    cfg = RunConfig.from_options(data or "", cfg, **changes)
    fit(cfg, log=log, resume_dir=run_dir)


def launch_torchrun(nproc: int) -> None:
    """`train ... --nproc N`: the same command under `torchrun --standalone --nproc_per_node N` (this process is
    replaced by torchrun's; its exit code is the run's)."""
    if not 1 <= nproc <= 1024:
        raise TunevisionError(f"nproc must be in 1..1024, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise TunevisionError("--nproc inside torchrun: drop --nproc (torchrun already started the processes)")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip or a == "--nproc" or a.startswith("--nproc="):
            skip = a == "--nproc"
            continue
        args.append(a)
    os.execvp(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={nproc}", "-m", "tunevision", *args])


@main.command()
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--modes", default="finetune,scratch", show_default=True,
              help="comma-separated modes to train one after the other")
@config_options
def compare(data: str, config_file: str | None, modes: str, **overrides: Any) -> None:
    """Train the same architecture on DATA once per mode and print their accuracies side by side: by default
    pretrained fine-tuning vs training from scratch, with the same epochs and each mode's own LR."""
    from tunevision.classify.train import compare_modes

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
    run(go)


@main.command("lr-find")
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--steps", default=100, show_default=True, type=click.IntRange(5, 10_000),
              help="optimizer steps in the sweep")
@config_options
def lr_find(data: str, config_file: str | None, steps: int, **overrides: Any) -> None:
    """Sweep the learning rate on DATA (whole network; --mode finetune unless told), plot loss vs LR, suggest one.
    The plot goes to OUT/NAME.png (default ./lr_find.png)."""
    from tunevision.classify.lr_range import find_lr

    def go() -> None:
        overrides["train__mode"] = overrides.get("train__mode") or "finetune"
        out, name = overrides.pop("out", None), overrides.pop("name", None)
        cfg = build_config(data, config_file, overrides)
        from tunevision.core.output import writable_file
        plot = writable_file(Path(out or ".") / f"{name or 'lr_find'}.png", "LR plot")
        suggestion, _, _ = find_lr(cfg, steps=steps, plot_path=plot)
        click.echo(f"suggested learning rate {suggestion:.2e} (body; head x {cfg.train.head_lr_mult:g}); "
                   f"plot {plot}\nuse it: tunevision train {data} --mode {cfg.train.mode} --lr {suggestion:.2e}"
                   " (or --lr auto)")
    run(go)


@main.command()
@click.argument("bundle")
@click.argument("data")
@tta_options
@click.option("--out", default=None, help="also write confusion_matrix.csv, per_class.csv, predictions.csv here")
@click.option("--top-losses", default=0, type=click.IntRange(0, 200),
              help="write a grid of the N highest-loss images with Grad-CAM")
@click.option("--confusion", is_flag=True, help="write the confusion matrix heat map PNG")
@click.option("--unknown-classes", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="classes in DATA that the model does not know: refuse, or leave them out (and say so)")
@click.option("--device", default="auto")
def evaluate(bundle: str, data: str, tta: bool, tta_crops: int, tta_reduce: str, out: str | None, top_losses: int,
             confusion: bool, unknown_classes: str, device: str) -> None:
    """Score BUNDLE (a run folder or model folder) on DATA: accuracy, per-class metrics, confusion matrix.

    On the unsplit folder the model was trained on, only its validation images are scored. With --tta, the
    plain score is computed too and both are printed with their inference time."""
    ctx = click.get_current_context()

    def go() -> None:
        from tunevision.api import load
        from tunevision.classify.predict import model_source
        from tunevision.cli.tasks import commands_for, refuse_unused
        from tunevision.core.output import writable_dir
        source = model_source(bundle)
        task, commands = commands_for(source)
        refuse_unused(ctx, commands.evaluate_flags, task)
        folder = writable_dir(out, "evaluation folder (--out)") if out else None
        commands.evaluate(load(source, device=device), data, out=folder, tta=tta, tta_crops=tta_crops, tta_reduce=tta_reduce,
                          top_losses=top_losses, confusion=confusion, unknown_classes=unknown_classes)
    run(go)


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--csv", "csv_path", default=None, help="also write predictions to this CSV")
@tta_options
@click.option("--device", default="auto")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True,
              help="bf16 is ~2x faster on AMX CPUs but may flip borderline predictions vs exported models")
@click.option("--runtime", type=click.Choice(["torch", "onnx", "onnx-int8"]), default="torch", show_default=True,
              help="torch: the bundle in PyTorch, its body on the ONNX graph its training run kept where there is "
                   "one (fp32 on a CPU; checked against the body first); onnx: the bundle's ONNX export on "
                   "onnxruntime (made and parity-checked on first use); onnx-int8: its int8 export (made on first "
                   "use, kept only within 1 point of fp32 accuracy)")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="detectors: the lowest score drawn and listed; multi-label models: every label's threshold "
                   "instead of the per-label ones chosen on validation")
@click.option("--out", default="predictions", show_default=True,
              help="detectors/segmenters: folder for the annotated PNGs and predictions.json")
def predict(model: str, inputs: tuple[str, ...], top_k: int, as_json: bool, csv_path: str | None, tta: bool,
            tta_crops: int, tta_reduce: str, device: str, precision: str, runtime: str, threshold: float,
            out: str) -> None:
    """Predict classes for images, folders or globs with MODEL: a run folder, a bundle, an exported .onnx, or
    `imagenet` for the pretrained backbone's ImageNet classes (`tunevision classify` does that too). A detector
    or segmenter draws its boxes or masks into --out and lists them (JSON with --json)."""
    ctx = click.get_current_context()

    def go() -> None:
        from tunevision.classify.predict import model_source
        from tunevision.cli.tasks import commands_for, refuse_unused
        source = model_source(model)
        task, commands = commands_for(source)
        refuse_unused(ctx, commands.predict_flags, task)
        commands.predict(source, inputs, top_k=top_k, as_json=as_json, csv_path=csv_path, tta=tta,
                         tta_crops=tta_crops, tta_reduce=tta_reduce, device=device, precision=precision,
                         runtime=runtime, out=out, threshold=threshold if ctx.get_parameter_source("threshold") ==
                         click.core.ParameterSource.COMMANDLINE else None)
    run(go)


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_name", default="efficientnet_lite0", show_default=True,
              help="any timm or torchvision classifier; hub weights when online")
@click.option("--weights", default=None, help="local state dict for --model (offline)")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def classify(images: tuple[str, ...], model_name: str, weights: str | None, top_k: int, as_json: bool) -> None:
    """Name what is in IMAGES with the 1000 ImageNet classes of a pretrained network."""
    from tunevision.classify.predict import imagenet_model, predict_paths
    from tunevision.core.runtime import INFERENCE_PRECISION, resolve_runtime

    def go() -> None:
        rt = resolve_runtime(precision=INFERENCE_PRECISION)
        network, meta = imagenet_model(model_name, weights)
        print_predictions(predict_paths(network.to(rt.device), meta, list(images), rt, top_k=top_k), as_json,
                          None, top_k)
    run(go)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def report(run_dir: str) -> None:
    """(Re)write RUN_DIR/report.html: data, augmentation, curves, results, top losses, calibration, model."""
    from tunevision import tasks

    def go() -> None:
        click.echo(f"wrote {tasks.for_bundle(run_dir).report(Path(run_dir))}")
    run(go)


@main.command()
@click.argument("bundle")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True)
@click.option("--out", default=None, help="output folder [default: BUNDLE/export]")
@click.option("--samples", multiple=True, help="images for the parity check [default: scikit-image photos]")
@click.option("--int8", is_flag=True, help="also write model.int8.onnx: static quantisation calibrated on the "
                                          "bundle's training images, kept only within --max-drop of fp32 accuracy")
@click.option("--calibration", default=None, help="int8 calibration data [default: the bundle's training data]")
@click.option("--max-drop", default=1.0, show_default=True, help="largest int8 accuracy loss accepted, in points")
def export(bundle: str, fmt: str, out: str | None, samples: tuple[str, ...], int8: bool, calibration: str | None,
           max_drop: float) -> None:
    """Export BUNDLE to ONNX or TorchScript and check parity with PyTorch on sample images."""
    from tunevision.api import load
    from tunevision.core.output import writable_dir

    def go() -> None:
        target = writable_dir(out, "export folder (--out)") if out else None
        if int8 and fmt != "onnx":
            raise TunevisionError("--int8 is an ONNX Runtime quantisation: use --format onnx")
        done = load(bundle, device="cpu").export(fmt, target, list(samples) or None)
        p = done.parity
        click.echo(f"wrote {done.path} (+ model.json)\nparity on {p.images} images: {p.describe()}")
        if int8:
            from tunevision.classify.quantize import quantize_bundle
            r = quantize_bundle(bundle, out=target, calibration=calibration, max_drop=max_drop / 100)
            click.echo(f"wrote {r.path}: validation accuracy {r.int8_acc:.2%} (fp32 {r.fp32_acc:.2%}) on "
                       f"{r.val_images} images, top-1 agreement {r.top1_agreement:.1%}; calibrated on "
                       f"{r.calibration_images} training images")
    run(go)


@main.command()
@click.option("--out", default="tunevision-demo", show_default=True, help="folder for the demo data and run")
def demo(out: str) -> None:
    """Train on real photos that ship with scikit-image (faces vs. non-faces), end to end, in seconds."""
    from tunevision.cli.demo import run_demo
    run(lambda: run_demo(Path(out)))


for _command in (cli_serve.serve, cli_tools.detect, cli_tools.segment, cli_tools.preview, cli_tools.gradcam,
                 cli_audit.audit, cli_audit.embed, cli_audit.similar):
    main.add_command(_command)


def entry() -> None:
    """The console script (and `python -m tunevision`): `main`, then a quick exit. Tearing the interpreter down
    after torch, torch._dynamo (which torchvision imports) and a run's arrays takes 1.5 s (hymenoptera) to 5 s
    (flowers5) of wall time that does nothing: every file is already written and closed (atomic writes). So the
    exit handlers run (temporary folders, torch.distributed, multiprocessing), the streams are flushed and the
    process ends without the module teardown, once the threads that Python would wait for have ended. Before
    it, malloc is told to keep freed blocks (`keep_freed_memory`)."""
    keep_freed_memory()
    try:
        main()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    if not isinstance(code, int):  # sys.exit("message") prints it and exits 1; None is success
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()  # what the interpreter's own exit runs first; the module teardown after it is skipped
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
