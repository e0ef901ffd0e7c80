"""Train options generated from the config dataclasses (each declared and validated once), shared by every
command that trains or reads data."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click

from tunevision.core.config import SECTIONS, RunConfig
from tunevision.core.errors import TunevisionError


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
    for section, cls in reversed(SECTIONS.items()):
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
    base = RunConfig.load(config_file) if config_file else None
    flat = {key.partition("__")[2] or key: value for key, value in overrides.items() if value is not None}
    cfg = RunConfig.from_options(data or "", base, **flat)
    if not cfg.data.data:
        raise TunevisionError("no data: give a folder of class subfolders, e.g. tunevision train photos/")
    return cfg
