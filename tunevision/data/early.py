"""Decoding in a helper process while `tunevision train` imports torch.

The imports take about 3 s of one core (torch, then timm, which pulls in torchvision and torch._dynamo) while the
other core idles, and nothing a run does can start before them. A helper process needs only numpy and Pillow: it
discovers the data as the run will, decodes it into the image cache, and the run's `load_images` finds the
cache there, or waits on the helper's claim (`sources.claim`) instead of decoding the same images again. Any
guess the helper gets wrong (another decode size, another split) only costs its own work: the run's cache keys
decide what it reads.

    python -m tunevision.data.early CONFIG_JSON SIDE
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tunevision.core.config import CACHED_MODES, CLASSIFY, RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.data.discover import discover_run, task_name_for_data
from tunevision.data.images import image_size_for, resize_for, resolve_fit
from tunevision.data.sources import cache_file, claim, decode_to_cache, release

# Below the run's importing thread: the helper should take the idle core, not slow the imports down.
NICENESS = 5


def start_decoding(cfg: RunConfig, input_size: int, crop_pct: float) -> subprocess.Popen | None:
    """Start the helper for a classification run whose backbone takes `input_size` at `crop_pct` (known without
    building it); None where it would not help: no image cache, an archive, a data spec the run will refuse or a
    scene task (the run reports it), under torchrun (its ranks split the decoding)."""
    spec = cfg.data.data
    if not cfg.data.cache_dir or "WORLD_SIZE" in os.environ or not Path(spec).expanduser().exists():
        return None  # (a `mnist:` spec is no path: archives need no decoding)
    try:
        task = task_name_for_data(cfg)
        if task not in CLASSIFY:
            return None
        cfg = cfg.for_task(task)
    except Exception:  # noqa: BLE001 - the run itself says what is wrong with the data, in its own words
        return None
    image_size = cfg.data.image_size or image_size_for(input_size, crop_pct, cfg.train.mode in CACHED_MODES)
    side = resize_for(image_size, crop_pct)
    return subprocess.Popen([sys.executable, "-m", "tunevision.data.early", json.dumps(cfg.to_dict()), str(side)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def decode_for_run(cfg: RunConfig, side: int) -> int:
    """Decode the run's training and validation images at `side` into its image cache; the number decoded
    (0: an archive, whose arrays need no decoding, or images cached or claimed already)."""
    ds = discover_run(cfg)
    if ds.arrays is not None:
        return 0
    fit = resolve_fit(cfg.data.resize, ds.multilabel)
    cache = Path(cfg.data.cache_dir).expanduser()
    parts = [(samples, cache_file(samples, side, cache, fit=fit)) for samples in (ds.train, ds.val)]
    # both claimed before either is decoded: the run, reaching the validation images, must find them claimed
    mine = [(samples, npy) for samples, npy in parts if not npy.is_file() and claim(npy)]
    try:
        for samples, npy in mine:
            decode_to_cache(samples, side, npy, max_pixels=cfg.data.max_pixels, workers=cfg.data.workers or None,
                            fit=fit)  # None (a full or read-only folder): the run decodes, and says so
            release(npy)  # the run goes on with these images while the next part decodes
    finally:
        for _, npy in mine:
            release(npy)
    return sum(len(samples) for samples, _ in mine)


def stop(helper: subprocess.Popen) -> None:
    """A helper still decoding belongs to a run that stopped early, or to one that guessed another decode size."""
    if helper.poll() is None:
        helper.terminate()
        helper.wait()


@contextlib.contextmanager
def decoding_ahead(cfg: RunConfig, sizes: tuple[int, float] | None) -> Iterator[None]:
    """Run the block (the imports and the run) beside a helper decoding for it, when the backbone's `sizes` (input
    side, crop_pct) are known. The helper stops with the block; a run refused for bad input (a bad option is only
    found after the imports) leaves no cache folder that it and its helper made."""
    cache = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None
    fresh = cache is not None and not cache.exists()
    helper = start_decoding(cfg, *sizes) if sizes else None
    try:
        yield
    except TunevisionError:
        if helper is not None and fresh:
            stop(helper)
            shutil.rmtree(cache, ignore_errors=True)
        raise
    finally:
        if helper is not None:
            stop(helper)


def _terminated(signum, frame) -> None:
    raise SystemExit(1)  # so that the claims are released and the half-written cache file removed


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, _terminated)
    if hasattr(os, "nice"):
        os.nice(NICENESS)
    cfg = RunConfig.from_dict(json.loads(argv[0]))
    decode_for_run(cfg, int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
