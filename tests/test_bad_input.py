"""The bad-input suite: every mistake a user can make ends in exit code 2, one line, and no file left behind;
and nothing on disk (a damaged cache, a half-written checkpoint) can poison a later run."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main
from tunevision.core.errors import TunevisionError


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *fragments: str) -> None:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.output, r.output
    for f in fragments:
        assert f in r.output, (f, r.output)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "d", n=8)


@pytest.mark.parametrize("flag, value, fragment", [
    ("--epochs", "-1", "epochs must be >= 0 (0 = the mode's default), got -1"),
    ("--batch-size", "1", "batch_size must be >= 2 (BatchNorm needs two images per step), got 1"),
    ("--dropout", "1.5", "dropout must be in [0, 1), got 1.5"),
    ("--workers", "-1", "workers must be >= 0, got -1"),
    ("--head-lr-mult", "-1", "head_lr_mult must be > 0, got -1.0"),
    ("--early-stopping", "-1", "early_stopping must be >= 0 (0 = off), got -1"),
    ("--device", "tpu", "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("--augment", "rrc(scale=2-3)", "scale must be a range lo-hi with 0 < lo <= hi <= 1"),
    ("--mixup", "0.2", "mixup is used by --mode finetune or scratch only"),
    ("--val-fraction", "1", "val_fraction must be between 0 and 1 (exclusive), got 1.0"),
])
def test_bad_option_values_are_one_line_and_leave_nothing(data: Path, tmp_path: Path, flag, value, fragment) -> None:
    r = invoke("train", data, "--out", tmp_path / "runs", "--cache-dir", tmp_path / "c", flag, value)
    one_line_error(r, fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it(data: Path, tmp_path: Path) -> None:
    r = invoke("train", data, *tiny_args(str(tmp_path / "c"), tmp_path / "runs"), "--device", "cuda")
    one_line_error(r, "no CUDA GPU")
    assert not list((tmp_path / "runs").glob("*"))  # the run folder made before the failure is gone


@pytest.mark.parametrize("content, fragment", [
    ({"train": {"epochs": "ten"}}, "epochs must be an integer, got 'ten'"),
    (["epochs", 3], "expected a mapping"),
    ({"train": {"epoch": 3}}, "unknown option 'epoch'; did you mean 'epochs'?"),
    ({"train": [1, 2]}, "section 'train' must be a mapping"),
])
def test_bad_yaml_configs(data: Path, tmp_path: Path, content, fragment) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(content))
    one_line_error(invoke("train", data, "--config", tmp_path / "c.yaml"), fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_outputs_non_root(data: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    one_line_error(invoke("train", data, "--out", ro / "runs"), "cannot write")


def test_outputs_that_cannot_be_folders(data: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder must go: fails for root too
    one_line_error(invoke("train", data, "--out", blocker / "runs"), "is a file, not a folder")
    one_line_error(invoke("train", data, "--out", tmp_path / "r", "--cache-dir", blocker / "c"), "cache")
    one_line_error(invoke("export", tiny_bundle, "--out", blocker / "x"), "export folder")
    img = next((data / "red").glob("*.png"))
    one_line_error(invoke("predict", tiny_bundle, img, "--csv", blocker / "p.csv"), "predictions CSV")
    one_line_error(invoke("gradcam", tiny_bundle, img, "--out", blocker / "g.png"), "output file")
    one_line_error(invoke("predict", tiny_bundle, img, "--csv", tmp_path), "is a folder")


def test_evaluate_refuses_classes_the_model_does_not_know(tmp_path: Path, tiny_bundle: Path) -> None:
    data = make_class_folders(tmp_path / "e", n=4, classes=("blue", "red", "green"))
    one_line_error(invoke("evaluate", tiny_bundle, data, "--device", "cpu"), "green", "not among the model's classes")
    r = invoke("evaluate", tiny_bundle, data, "--device", "cpu", "--unknown-classes", "skip")
    assert r.exit_code == 0 and "skipped 4 images of unknown class(es) green" in r.output
    assert "8 images, accuracy" in r.output


@pytest.mark.parametrize("text", [
    "\ufeffpath,label\r\n{a},blue\r\n{b},red\r\n",              # Excel: BOM and CRLF
    'path,label\n"{a}","blue"\n"{b}","red"\n',                  # quoted fields
    "\ufeff\"path\",\"label\"\r\n\"{a}\",blue\r\n{b},\"red\"\r\n",  # both
])
def test_csv_with_bom_crlf_and_quotes(tmp_path: Path, text: str) -> None:
    from tunevision.data.discover import discover
    data = make_class_folders(tmp_path / "d", n=4)
    rows = []
    for c in ("blue", "red"):
        rows += [(p, c) for p in sorted((data / c).iterdir())]
    body = text.split("\n", 1)[0] + "\n" + "".join(
        text.split("\n", 1)[1].split("\n")[0].replace("{a}", str(p)).replace("blue", c) + "\n" for p, c in rows)
    (tmp_path / "labels.csv").write_bytes(body.replace("\r\n", "\n").replace("\n", "\r\n" if "\r" in text else "\n")
                                          .encode("utf-8"))
    ds = discover(str(tmp_path / "labels.csv"))
    assert ds.classes == ["blue", "red"] and len(ds.train) + len(ds.val) == 8


def test_a_damaged_cache_is_rebuilt_and_reported(data: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "runs"
    args = ["train", data, *tiny_args(str(cache), out, "--mode", "freeze", "--epochs", "2", "--views", "0")]
    assert invoke(*args, "--name", "a").exit_code == 0
    for npy in (cache / "images").glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:200])  # truncated: "mmap length is greater than file size" before
    for feats in (cache / "features").glob("*.safetensors"):
        feats.write_bytes(feats.read_bytes()[:30])  # "SafetensorError: incomplete metadata" before
    r = invoke(*args, "--name", "b")
    assert r.exit_code == 0, r.output
    log = (out / "b" / "train.log").read_text()
    assert "damaged image cache" in log and "damaged feature cache" in log and "rebuilding" in log
    assert invoke(*args, "--name", "c").exit_code == 0
    assert "damaged image cache" not in (out / "c" / "train.log").read_text()  # rebuilt files are whole


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "one", n=6, classes=("blue",))
    r = invoke("train", data, *tiny_args(str(tmp_path / "c"), tmp_path / "runs"))
    one_line_error(r, "at least 2 class folders")
    assert not list((tmp_path / "runs").glob("*"))


def test_config_records_resolved_values_and_checkpoint_is_kept_on_request(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    r = invoke("train", data, *tiny_args(str(tmp_path / "c"), out, "--mode", "finetune", "--name", "k",
                                         "--keep-checkpoint", "--freeze-epochs", "0", "--epochs", "1"))
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((out / "k" / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["lr"] == 2e-4 and cfg["data"]["image_size"] == 32
    assert (out / "k" / "checkpoint.pt").is_file()


def test_resume_refuses_what_it_cannot_do(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert invoke("train", data, *tiny_args(str(tmp_path / "c"), out, "--mode", "finetune", "--epochs", "1",
                                            "--name", "f")).exit_code == 0
    one_line_error(invoke("train", "--resume", out / "f"), "is finished", "--weights")
    one_line_error(invoke("train", "--resume", out / "f", "--epochs", "5"), "cannot change epochs")
    other = make_class_folders(tmp_path / "other", n=4)
    one_line_error(invoke("train", other, "--resume", out / "f"), "was trained on")


def test_predict_keeps_input_order_and_classify_exits_1(tiny_bundle: Path, data: Path, tmp_path: Path) -> None:
    img = next((data / "red").glob("*.png"))
    r = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(img), str(tmp_path / "nothere.jpg"), str(img),
                                  "--json"])
    assert r.exit_code == 0
    assert [p["path"] for p in json.loads(r.output)] == [str(img), str(tmp_path / "nothere.jpg"), str(img)]
    r = CliRunner().invoke(main, ["classify", str(tmp_path / "nothere.jpg"), "--model", "tiny_cnn"])
    assert r.exit_code != 0  # nothing readable (tiny_cnn has no ImageNet head): never a silent 0


def test_nan_loss_stops_naming_epoch_and_step() -> None:
    from tunevision.data import augment as aug
    from tunevision.core.config import RunConfig, TrainConfig
    from tunevision.classify.loops import train_one_epoch
    from tunevision.models.backbones import build_classifier, create_backbone
    from tunevision.engine.optim import make_optimizer, make_scheduler
    from tunevision.core.runtime import resolve_runtime
    model = build_classifier(create_backbone("tiny_cnn", pretrained=False), 2)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    cfg = RunConfig(train=TrainConfig(mode="finetune", batch_size=4)).for_task("classify")
    opt = make_optimizer(model, cfg.train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(TunevisionError, match="at epoch 3, step 0"):
        train_one_epoch(model, images, torch.tensor([0, 1] * 4), aug.make_pipeline("none", 32), opt,
                        make_scheduler(opt, "cosine", 2), resolve_runtime("cpu", "fp32"), cfg,
                        torch.Generator().manual_seed(0), lambda n: None, epoch=3)
    after = model.state_dict()
    assert all(torch.allclose(before[k].float(), after[k].float(), equal_nan=True) for k in before
               if k.startswith(("head.", "body.0.weight")))  # no optimiser step on a NaN loss


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from tunevision.core.atomic import atomic_write
    target = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, target)

    def full(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(TunevisionError, match=f"{target}: cannot write \\(No space left on device\\)"):
        atomic_write(target, full)
    assert torch.load(target)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=60)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "tunevision", "train", str(data),
           *tiny_args(str(tmp_path / "c"), out, "--mode", "finetune", "--epochs", "40", "--name", "t",
                      "--batch-size", "4")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "t" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and f"tunevision train --resume {out / 't'}" in err and "Traceback" not in err
    done = len(list(csv.DictReader(open(metrics))))
    assert 2 <= done < 40 and (out / "t" / "checkpoint.pt").is_file()
    r = subprocess.run([sys.executable, "-m", "tunevision", "train", "--resume", str(out / "t")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [int(row["epoch"]) for row in csv.DictReader(open(metrics))] == list(range(1, 41))


def test_small_images_are_cached_at_their_own_size(tmp_path: Path) -> None:
    from tunevision.core.config import RunConfig
    from tunevision.classify.prepare import ResizedImages, prepare_data
    from tunevision.models.backbones import create_backbone
    from tunevision.core.ui import RunLog
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "digits.npz", images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
             labels=np.array(["a", "b"] * 20))
    cfg = RunConfig.from_options(f"npz:{tmp_path / 'digits.npz'}", cache_dir=str(tmp_path / "c"), image_size=64)
    data = prepare_data(cfg, create_backbone("tiny_cnn", pretrained=False), RunLog(quiet=True))
    assert isinstance(data.train_images, ResizedImages) and data.train_images[:3].shape == (3, 64, 64, 3)
    cached = [np.load(p, mmap_mode="r").shape for p in (tmp_path / "c" / "images").glob("*.npy")]
    assert cached and all(shape[1:] == (28, 28, 3) for shape in cached)


# --- property-based: option parsing and the augmentation spec parser ------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--epochs", "--batch-size", "--views", "--early-stopping", "--image-size", "--workers"]),
       value=st.integers(max_value=-1))
def test_any_negative_count_is_refused_in_one_line(tmp_path: Path, flag: str, value: int) -> None:
    out = tmp_path / "prop-runs"
    r = invoke("train", tmp_path, "--out", out, flag, str(value))
    one_line_error(r, f"got {value}")
    assert not out.exists()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="rcflipjtesa(),=-.0123456789 ", max_size=30))
def test_augmentation_specs_either_compile_or_fail_with_a_user_error(spec: str) -> None:
    from tunevision.data.augment import make_pipeline
    try:
        pipeline = make_pipeline(spec, 16)
    except TunevisionError:
        return
    x = pipeline(torch.zeros(2, 24, 24, 3, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16)
