"""Detection on the shared engine: the bad-file corpus, VOC found by content, explicit options honoured, resume and
SIGTERM as for a classifier. Tiny synthetic sets and Lite0 with random weights keep each run to seconds."""
from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import tunevision as tv
from tests.scenes import write_voc
from tunevision.cli.main import main
from tunevision.core.config import RunConfig

FAST = dict(epochs=1, image_size=64, pretrained=False, val_fraction=0.25, device="cpu")
TRAIN = ["--epochs", "1", "--image-size", "64", "--no-pretrained", "--val-fraction", "0.25", "--device", "cpu"]


def _png_bomb_header() -> bytes:
    """A PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def add_bad_corpus(data: Path) -> dict[str, str]:
    """Replace images of a VOC set with the bad-input corpus; returns {stem: what it is} for the unusable ones."""
    images = data / "images"
    (images / "im0.jpg").write_bytes(b"")                                                  # zero bytes
    (images / "im1.jpg").write_text("this is not a photo")                                 # text as .jpg
    whole = io.BytesIO()
    Image.fromarray(np.full((80, 96, 3), 90, np.uint8)).save(whole, "JPEG")
    (images / "im2.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])       # truncated JPEG
    (images / "im3.jpg").unlink()
    (images / "im3.png").write_bytes(_png_bomb_header())                                   # PNG bomb header
    (data / "annotations" / "im3.xml").write_text(
        (data / "annotations" / "im3.xml").read_text().replace("im3.jpg", "im3.png"))
    # usable but unusual: CMYK, EXIF-rotated (annotated upright), 16-bit PNG
    Image.open(images / "im4.jpg").convert("CMYK").save(images / "im4.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown: stored 80x96, shown 96x80 as annotated
    Image.open(images / "im5.jpg").transpose(Image.Transpose.ROTATE_90).save(images / "im5.jpg", exif=exif)
    gray = np.asarray(Image.open(images / "im6.jpg").convert("L")).astype(np.uint16) * 257
    (images / "im6.jpg").unlink()
    Image.fromarray(gray).save(images / "im6.png")
    (data / "annotations" / "im6.xml").write_text(
        (data / "annotations" / "im6.xml").read_text().replace("im6.jpg", "im6.png"))
    return {"im0": "empty", "im1": "not a readable image", "im2": "truncated", "im3": "decompression bomb"}


def test_a_detection_set_with_the_bad_file_corpus_trains_and_names_each_bad_file(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=12)
    bad = add_bad_corpus(data)
    r = CliRunner().invoke(main, ["train", str(data), *TRAIN, "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    run = next((tmp_path / "runs").iterdir())
    skipped = {Path(row["path"]).stem: row["reason"] for row in csv.DictReader(open(run / "skipped.csv"))}
    assert set(skipped) == set(bad), skipped
    for stem, fragment in bad.items():
        assert fragment in skipped[stem].lower() and stem in r.output
    split = list(csv.DictReader(open(run / "split.csv")))
    assert len(split) == 8 and not {Path(row["path"]).stem for row in split} & set(bad)


@pytest.mark.parametrize("layout", ["annots", "beside"])
def test_voc_is_found_by_content_whatever_the_folders_are_called(tmp_path: Path, layout: str) -> None:
    data = write_voc(tmp_path / "v", n=6)
    if layout == "annots":
        (data / "annotations").rename(data / "annots")
    else:
        for xml in (data / "annotations").glob("*.xml"):
            shutil.move(str(xml), data / "images" / xml.name)
        (data / "annotations").rmdir()
    r = CliRunner().invoke(main, ["train", str(data), *TRAIN, "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert "voc annotations, task detect" in r.output and "4 train / 2 val images" in r.output


def test_explicit_batch_size_optimizer_and_weight_decay_mean_what_they_say_for_a_detector(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=6)
    r = CliRunner().invoke(main, ["train", str(data), *TRAIN, "--task", "detect", "--batch-size", "32",
                                  "--optimizer", "adamw", "--weight-decay", "0.01", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load(next((tmp_path / "runs").glob("*/config.yaml")).read_text())["train"]
    assert (saved["batch_size"], saved["optimizer"], saved["weight_decay"]) == (32, "adamw", 0.01)
    assert "batch 32, adamw" in r.output
    defaults = RunConfig.from_options(str(data)).for_task("detect").train
    assert (defaults.batch_size, defaults.optimizer, defaults.weight_decay) == (4, "sgd", 1e-4)


def test_a_classification_option_is_refused_for_a_detector_in_one_line(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=4)
    r = CliRunner().invoke(main, ["train", str(data), *TRAIN, "--mixup", "0.2", "--mode", "finetune",
                                  "--out", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "mode is used by classify and multilabel only" in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_sigterm_stops_a_detector_cleanly_and_it_resumes(tmp_path: Path, monkeypatch) -> None:
    import tunevision.scene.train as st
    data = write_voc(tmp_path / "v", n=6)
    real, calls = st.train_scene_epoch, []

    def terminated_in_epoch_two(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)
    monkeypatch.setattr(st, "train_scene_epoch", terminated_in_epoch_two)
    assert threading.current_thread() is threading.main_thread()
    r = CliRunner().invoke(main, ["train", str(data), *TRAIN, "--epochs", "3", "--out", str(tmp_path / "runs")])
    assert r.exit_code != 0 and "tunevision train --resume" in r.output
    run = next((tmp_path / "runs").iterdir())
    assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").exists()
    r = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    assert [row["epoch"] for row in csv.DictReader(open(run / "metrics.csv"))] == ["1", "2", "3"]
    assert (run / "summary.json").is_file() and not (run / "checkpoint.pt").exists()


def test_early_stopping_and_the_best_epoch_come_from_the_engine_for_a_detector(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=6)
    model = tv.fit(str(data), out=str(tmp_path / "runs"), quiet=True, **{**FAST, "epochs": 4, "early_stopping": 1})
    rows = list(csv.DictReader(open(model.run_dir / "metrics.csv")))
    scores = [float(r["score"]) for r in rows]
    best = int(np.argmax(scores)) + 1
    assert len(rows) <= 4 and (len(rows) == 4 or len(rows) - best >= 1)
    assert yaml.safe_load((model.run_dir / "config.yaml").read_text())["train"]["early_stopping"] == 1
