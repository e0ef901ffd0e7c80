"""`tunevision serve`: the options come from `ServeOptions`, so a bad value is one line (exit 2) before anything
starts, and the server drains on SIGTERM/SIGINT."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click

from tunevision.cli.common import run
from tunevision.core.errors import TunevisionError
from tunevision.serve.options import ServeOptions


def serve_options(fn: Callable) -> Callable:
    """One --flag per ServeOptions field, values checked by ServeOptions (one line, exit 2), not by click."""
    for f in reversed(dataclasses.fields(ServeOptions)):
        flag = f.name.replace("_", "-")
        decl = (f"--{flag}/--no-{flag}",) if isinstance(f.default, bool) else (f"--{flag}",)
        kind = None if isinstance(f.default, bool) else str if f.name in ("api_key", "runtime") else type(f.default)
        fn = click.option(*decl, f.name, type=kind, default=None,
                          help=f"{f.metadata['help']} [default: {f.default!r}]")(fn)
    return fn


@click.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="bind address (loopback unless told)")
@click.option("--port", default=8000, show_default=True)
@serve_options
def serve(model: str, host: str, port: int, **options: Any) -> None:
    """Serve MODEL (run folder, bundle, .onnx or imagenet) over HTTP: POST /predict (multipart file/files, raw
    image body, or JSON base64), GET /health, /labels, /metrics, / (web page). SIGTERM/SIGINT drain and exit 0."""
    import logging
    import os

    def go():
        from tunevision.engine.export import require
        for module in ("fastapi", "uvicorn", "prometheus_client"):
            require(module, "serve")
        from tunevision.serve.app import create_app
        if not 0 <= port <= 65535:
            raise TunevisionError(f"port must be in 0..65535, got {port}")
        given = {k: v for k, v in options.items() if v is not None}
        given.setdefault("api_key", os.environ.get("TUNEVISION_API_KEY", ""))
        o = ServeOptions(**given)
        if host not in ("127.0.0.1", "localhost", "::1") and not o.api_key:
            click.secho(f"warning: serving on {host} without an API key: anyone who can reach this address can use "
                        "the model. Set --api-key or $TUNEVISION_API_KEY", fg="yellow", err=True)
        return create_app(model, o), o
    app, o = run(go)
    import uvicorn
    handler = logging.StreamHandler()
    logging.getLogger("tunevision.access").addHandler(handler)
    logging.getLogger("tunevision.access").setLevel(logging.INFO)
    from tunevision.serve.app import draining_server, header_timeout_protocol
    draining_server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                   http=header_timeout_protocol(o.header_timeout_s),
                                   timeout_graceful_shutdown=int(o.timeout_s) + 5, timeout_keep_alive=5)).run()
