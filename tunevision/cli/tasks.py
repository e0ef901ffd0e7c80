"""The command line's side of the task table: for each task, what `predict` and `evaluate` do and which of their
flags it reads. A flag given on the command line that the model's task does not read is refused in one line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import click

from tunevision.cli.classify import evaluate_classes, predict_classes
from tunevision.cli.scene import evaluate_scene, predict_scene
from tunevision.core.errors import TunevisionError


@dataclass(frozen=True)
class Commands:
    predict: Callable[..., None]
    predict_flags: tuple[str, ...]    # the predict options this task reads
    evaluate: Callable[..., None]
    evaluate_flags: tuple[str, ...]


TTA = ("tta", "tta_crops", "tta_reduce")
CLASSIFY = Commands(predict_classes, ("top_k", "as_json", "csv_path", *TTA, "device", "precision", "runtime"),
                    evaluate_classes, ("out", *TTA, "top_losses", "confusion", "unknown_classes", "device"))
SCENE = Commands(predict_scene, ("threshold", "out", "as_json", "device"), evaluate_scene, ("out", "device"))
MULTILABEL = Commands(predict_classes, CLASSIFY.predict_flags + ("threshold",), evaluate_classes,
                      CLASSIFY.evaluate_flags)
COMMANDS = {"classify": CLASSIFY, "multilabel": MULTILABEL, "detect": SCENE, "segment": SCENE}


def commands_for(source: str) -> tuple[str, Commands]:
    """(task name, its commands) for a checked model argument (a bundle, run folder, .onnx or imagenet)."""
    from tunevision import tasks
    name = tasks.for_bundle(source).name
    return name, COMMANDS[name]


def refuse_unused(ctx: click.Context, reads: tuple[str, ...], task: str) -> None:
    """A flag typed on the command line that this task does not read is an error, not silently ignored."""
    for param in ctx.command.params:
        given = ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
        if given and param.name not in reads and param.param_type_name == "option":
            flag = max(param.opts, key=len)
            raise TunevisionError(f"{flag} does nothing for a {task} model; drop it")
