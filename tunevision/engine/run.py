"""A run's life for every task: its folder opened (new, or resumed from its checkpoint), Ctrl-C and SIGTERM turned
into a clean stop with the resume command, and a run that failed before its first epoch removed."""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.output import check_run_outputs
from tunevision.core.ui import RunLog
from tunevision.data.augment import make_pipeline
from tunevision.engine.rundir import load_checkpoint, new_run_dir, remove_failed_run


def open_run(cfg: RunConfig, resume_dir: Path | None, kind: str) -> tuple[RunConfig, Path, dict | None]:
    """(config, run folder, checkpoint) for a new run, or for `--resume RUN` from that run's own files (`cfg`,
    when it names the data, is that run's config with only device/precision/workers changed). `kind` names new
    run folders: DATA-KIND-N."""
    if resume_dir is None:
        make_pipeline(cfg.train.augment, 32)  # a bad spec fails now: before decoding, and before any run folder
        check_run_outputs(cfg.out, cfg.data.cache_dir)
        return cfg, new_run_dir(cfg, kind), None
    run_dir = Path(resume_dir)
    if not (run_dir / "config.yaml").is_file():
        raise TunevisionError(f"{run_dir}: not a run folder (no config.yaml); --resume takes a folder made by "
                              "tunevision train")
    saved = RunConfig.load(run_dir / "config.yaml")
    if cfg.data.data and Path(cfg.data.data).expanduser().resolve() != Path(saved.data.data).expanduser().resolve():
        raise TunevisionError(f"{run_dir} was trained on {saved.data.data}, not {cfg.data.data}; --resume continues "
                              "a run on its own data (start a new run with --weights to reuse its weights)")
    check_run_outputs(None, (cfg if cfg.data.data else saved).data.cache_dir)
    resume = load_checkpoint(run_dir)
    if resume is None:
        state = "finished" if (run_dir / "summary.json").is_file() else "not resumable (no checkpoint.pt)"
        raise TunevisionError(f"{run_dir} is {state}; to train further from its weights start a new run: "
                              f"tunevision train DATA --weights {run_dir}")
    return (cfg if cfg.data.data else saved), run_dir, resume


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler ending the job) ends training like Ctrl-C: cleanly, with the resume command."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def guarded_run(run_dir: Path, created: bool, log: RunLog, main: bool = True):
    """Ctrl-C or SIGTERM keep the checkpoint of the last finished epoch and print the resume command; a run that
    fails before its first epoch leaves no folder behind."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt:
        remove_failed_run(run_dir, created)
        if main and run_dir.is_dir():
            log.info(f"[yellow]interrupted; the checkpoint of the last finished epoch is kept. Continue with: "
                     f"tunevision train --resume {run_dir}[/]")
        raise
    except BaseException:
        remove_failed_run(run_dir, created)
        raise
