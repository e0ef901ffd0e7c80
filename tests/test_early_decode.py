"""`tunevision train` decodes in a helper process while it imports torch (data/early.py): the run must read what
the helper wrote, wait for what it is still writing, and decode on its own when the helper is gone or guessed
wrong."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_class_folders
from tunevision.core.config import RunConfig
from tunevision.data import sources
from tunevision.data.discover import discover_run
from tunevision.data.early import decode_for_run, start_decoding
from tunevision.data.sources import (
    cache_file,
    claim,
    claim_holder,
    decode_to_cache,
    load_images,
    release,
    wait_for_claim,
)


def no_decoding(*args, **kwargs):
    raise AssertionError("decoded again: the helper's cache was not read")


def config(data: Path, cache: Path | str, **options) -> RunConfig:
    return RunConfig.from_options(str(data), cache_dir=str(cache), **options).for_task("classify")


def test_the_run_reads_the_images_the_helper_decoded(tmp_path: Path, monkeypatch) -> None:
    data = make_class_folders(tmp_path / "photos", n=9)
    (data / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = config(data, tmp_path / "cache")
    assert decode_for_run(cfg, 36) == 19
    ds = discover_run(cfg)
    direct = [load_images(s, 36, cache_dir=None) for s in (ds.train, ds.val)]
    monkeypatch.setattr(sources, "decode_square", no_decoding)
    for samples, (images, bad) in zip((ds.train, ds.val), direct):
        cached, cached_bad = load_images(samples, 36, cache_dir=tmp_path / "cache")
        assert np.array_equal(np.asarray(cached), images) and cached_bad == bad
    assert [b.path for b in direct[0][1] + direct[1][1]] == [str(data / "red" / "broken.jpg")]
    assert decode_for_run(cfg, 36) == 0  # cached: nothing decoded twice
    assert not list((tmp_path / "cache" / "images").glob("*.claim")) and \
        not list((tmp_path / "cache" / "images").glob("*.tmp*"))


def test_the_helper_started_from_the_cli_fills_the_runs_cache(tmp_path: Path, monkeypatch) -> None:
    """The real subprocess, then the run's own data preparation for a backbone of the size the helper was told."""
    from tunevision.classify.prepare import prepare_data
    from tunevision.core.ui import RunLog
    from tunevision.models.backbones import create_backbone

    data = make_class_folders(tmp_path / "photos", n=8)
    cfg = config(data, tmp_path / "cache", backbone="tiny_cnn", pretrained=False)
    helper = start_decoding(cfg, 32, 1.0)
    assert helper is not None and helper.wait(timeout=60) == 0
    monkeypatch.setattr(sources, "decode_square", no_decoding)
    prepared = prepare_data(cfg, create_backbone("tiny_cnn", pretrained=False), RunLog(quiet=True))
    assert len(prepared.train_images) + len(prepared.val_images) == 16


def test_no_helper_where_it_cannot_help(tmp_path: Path, monkeypatch) -> None:
    from tests.scenes import write_voc

    data = make_class_folders(tmp_path / "photos", n=4)
    assert start_decoding(config(data, ""), 224, 0.875) is None
    assert start_decoding(RunConfig.from_options(str(write_voc(tmp_path / "voc")), cache_dir=str(tmp_path / "c")),
                          224, 0.875) is None
    assert start_decoding(RunConfig.from_options(str(tmp_path / "missing"), cache_dir=str(tmp_path / "c")),
                          224, 0.875) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert start_decoding(config(data, tmp_path / "c"), 224, 0.875) is None


def test_a_claim_holds_the_run_until_released_and_a_dead_holders_claim_is_taken_over(tmp_path: Path) -> None:
    npy = tmp_path / "images" / "key.npy"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        npy.parent.mkdir(parents=True)
        npy.with_suffix(".claim").write_text(str(holder.pid))
        assert claim_holder(npy) == holder.pid and not claim(npy)
        waited = threading.Event()
        waiter = threading.Thread(target=lambda: (wait_for_claim(npy), waited.set()))
        waiter.start()
        time.sleep(0.2)
        assert not waited.is_set()
        holder.kill()
        holder.wait()
        waiter.join(timeout=5)
        assert waited.is_set()  # the holder died without releasing: its claim no longer holds anyone
    finally:
        holder.kill()
    assert claim(npy) and int(npy.with_suffix(".claim").read_text()) == os.getpid()
    assert claim_holder(npy) is None  # this process's own claim never makes it wait on itself
    release(npy)
    assert not npy.with_suffix(".claim").exists()


def test_decoding_into_the_cache_fails_cleanly_where_it_cannot_write(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "photos", n=3)
    samples = discover_run(config(data, tmp_path / "cache")).train
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    assert decode_to_cache(samples, 32, cache_file(samples, 32, blocked)) is None


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_the_size_table_agrees_with_the_backbones(name: str) -> None:
    import timm

    from tunevision.models.backbones import BACKBONES
    from tunevision.models.sizes import PRETRAINED_INPUT

    assert name in BACKBONES
    cfg = timm.models.get_pretrained_cfg(name)
    assert PRETRAINED_INPUT[name] == (cfg.input_size[-1], cfg.crop_pct)


def test_a_stopped_helper_leaves_no_claim_and_no_partial_file(tmp_path: Path) -> None:
    """A run that stops early (bad data, Ctrl-C) stops its helper: the cache then holds only whole files."""
    from tunevision.data.early import stop

    data = tmp_path / "photos"
    for c in ("a", "b"):  # large enough that the helper is still decoding when stopped
        (data / c).mkdir(parents=True)
        for i in range(40):
            from PIL import Image
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(
                data / c / f"{i}.jpg")
    cache = tmp_path / "cache"
    helper = start_decoding(config(data, cache), 224, 0.875)
    deadline = time.time() + 30
    while not list((cache / "images").glob("*.claim")) and time.time() < deadline:
        time.sleep(0.05)
    assert helper.poll() is None, "the helper finished before it could be stopped; give it more images"
    stop(helper)
    assert helper.wait(timeout=30) == 1
    left = sorted(p.name for p in (cache / "images").iterdir())
    assert not [n for n in left if n.endswith(".claim") or ".tmp" in n], left
