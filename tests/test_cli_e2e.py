"""train -> evaluate -> predict through the real CLI on a tiny model, asserting on files and numbers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner

from tests.conftest import tiny_args
from tunevision.cli.main import main


def run(*args: str) -> "CliRunner.Result":
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_train_evaluate_predict_end_to_end(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    r = run("train", str(colour_folders), *tiny_args(cache, out, "--mode", "finetune", "--epochs", "4",
                                                      "--name", "e2e", "--lr", "0.01", "--batch-size", "8"))
    assert r.exit_code == 0, r.output
    run_dir = out / "e2e"
    for name in ("config.yaml", "dataset.json", "split.csv", "skipped.csv", "metrics.csv", "summary.json",
                 "train.log", "model/model.safetensors", "model/model.json",
                 "eval/confusion_matrix.csv", "eval/per_class.csv", "eval/predictions.csv"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint.pt").exists()  # a finished run keeps its bundle, not the resume state
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"]["backbone"] == "tiny_cnn" and cfg["train"]["epochs"] == 4
    metrics = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(m["epoch"]) for m in metrics] == [1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_val_acc"] >= 0.8  # colour decides the class: easy to learn
    meta = json.loads((run_dir / "model" / "model.json").read_text())
    assert meta["classes"] == ["blue", "red"] and meta["image_size"] == 32 and len(meta["mean"]) == 3

    r = run("evaluate", str(run_dir), str(colour_folders), "--device", "cpu", "--out", str(tmp_path / "ev"),
            "--top-losses", "4", "--confusion")
    assert (tmp_path / "ev" / "top_losses.png").is_file() and (tmp_path / "ev" / "confusion.png").is_file()
    assert r.exit_code == 0 and "accuracy" in r.output and "confusion" in r.output
    cm = list(csv.reader(open(tmp_path / "ev" / "confusion_matrix.csv")))
    # the unsplit folder trained this model: only its validation images (2 per class) are scored, and it says so
    assert cm[0][1:] == ["blue", "red"] and sum(int(v) for row in cm[1:] for v in row[1:]) == 4
    assert "scoring only the 4 images that did not train it" in r.output
    # the same images under another name (a CSV of them, a class's folder): still only the ones that did not train it
    table = tmp_path / "all.csv"
    table.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(colour_folders.rglob("*.*"))))
    r = run("evaluate", str(run_dir), str(table), "--device", "cpu")
    assert r.exit_code == 0 and "scoring only the 4 images that did not train it" in r.output, r.output
    r = run("evaluate", str(run_dir), str(colour_folders / "red"), "--device", "cpu")
    assert "scoring only the 2 images" in r.output or "every image in it trained" in r.output, r.output

    img = next((colour_folders / "red").glob("*.png"))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    r = run("predict", str(run_dir), str(img), str(colour_folders / "blue"), str(tmp_path / "bad.jpg"),
            "--json", "--top-k", "2", "--device", "cpu", "--csv", str(tmp_path / "p.csv"))
    assert r.exit_code == 0, r.output
    preds = json.loads(r.output)
    assert len(preds) == 1 + 12 + 1
    by_path = {p["path"]: p for p in preds}
    assert by_path[str(img)]["top"][0]["label"] == "red"
    assert abs(sum(t["prob"] for t in by_path[str(img)]["top"]) - 1) < 1e-3
    assert "not a readable image" in by_path[str(tmp_path / "bad.jpg")]["error"]
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 14 and rows[0]["label1"] in ("red", "blue")


def test_freeze_mode_trains_only_the_head(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tunevision.models.backbones import create_backbone
    r = run("train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode", "freeze", "--name", "f",
                                                      "--epochs", "30", "--views", "2"))
    assert r.exit_code == 0, r.output
    saved = load_file(str(tmp_path / "runs" / "f" / "model" / "model.safetensors"))
    import torch
    torch.manual_seed(0)  # the same seed fit() uses, so the same random body
    body = create_backbone("tiny_cnn", pretrained=False).body.state_dict()
    assert all(torch.equal(saved[f"body.{k}"], v.float() if v.is_floating_point() else v) for k, v in body.items())
    assert json.loads((tmp_path / "runs" / "f" / "summary.json").read_text())["best_val_acc"] >= 0.8
    # val, train eval, 2 views, and the audit's augmented view of the val images (its train one is view 1's)
    assert len(list((Path(cache) / "features").glob("*.safetensors"))) == 5


def test_user_errors_are_one_line(tmp_path: Path, cache: str) -> None:
    r = CliRunner().invoke(main, ["train", str(tmp_path / "missing"), *tiny_args(cache, tmp_path)])
    assert r.exit_code == 2 and r.output.strip().startswith("error:") and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--mode", "banana"])
    assert r.exit_code == 2 and "mode must be one of" in r.output
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--augment", "blur", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "unknown augmentation" in r.output
    assert not (tmp_path / "runs").exists()  # a rejected config leaves no run folder behind


def test_yaml_config_and_flag_override(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"train": {"epochs": 2, "mode": "finetune"},
                                                     "model": {"backbone": "tiny_cnn", "pretrained": False}}))
    r = run("train", str(colour_folders), "--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--name", "y",
            "--out", str(tmp_path / "runs"), "--cache-dir", cache, "--device", "cpu")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((tmp_path / "runs" / "y" / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["mode"] == "finetune"


def test_weights_from_an_earlier_run_continue_it(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    out = tmp_path / "runs"
    assert run("train", str(colour_folders), *tiny_args(cache, out, "--mode", "finetune", "--epochs", "2",
                                                         "--name", "a", "--lr", "0.01")).exit_code == 0
    first = load_file(str(out / "a" / "model" / "model.safetensors"))
    r = run("train", str(colour_folders), *tiny_args(cache, out, "--mode", "freeze", "--epochs", "1", "--name", "b",
                                                      "--weights", str(out / "a"), "--lr", "1e-9"))
    assert r.exit_code == 0, r.output
    second = load_file(str(out / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first if k.startswith("body."))
    assert torch.allclose(first["head.weight"], second["head.weight"], atol=1e-5)  # same classes: head kept
    r = run("train", str(colour_folders), *tiny_args(cache, out, "--weights", str(tmp_path / "nope.pth")))
    assert r.exit_code == 2 and "not found" in r.output


def test_progressive_resizing_schedule_and_run(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    from tunevision.classify.loops import size_for_epoch
    assert [size_for_epoch(e, 6, [128, 160, 224], 224) for e in range(1, 7)] == [128, 128, 160, 160, 224, 224]
    assert [size_for_epoch(e, 4, [], 224) for e in range(1, 5)] == [224] * 4
    assert [size_for_epoch(e, 2, [16, 24, 32], 32) for e in (1, 2)] == [16, 24]
    r = run("train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode", "finetune", "--epochs", "2",
                                                      "--sizes", "16,32", "--name", "p"))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "runs" / "p" / "metrics.csv")))
    assert [int(row["size"]) for row in rows] == [16, 32]  # the size each epoch really trained at
    r = CliRunner().invoke(main, ["train", str(colour_folders), "--sizes", "a,b"])
    assert r.exit_code == 2 and "comma-separated" in r.output


def test_weight_ema_is_evaluated_beside_the_raw_weights(colour_folders: Path, cache: str, tmp_path: Path) -> None:
    r = run("train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode", "finetune", "--epochs", "3",
                                                      "--ema", "0.9", "--name", "ema", "--lr", "0.01",
                                                      "--keep-checkpoint"))
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file
    ckpt = torch.load(tmp_path / "runs" / "ema" / "checkpoint.pt", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    assert any(not torch.equal(ema[k], v) for k, v in ckpt["model"].items() if v.is_floating_point())
    bundle = load_file(str(tmp_path / "runs" / "ema" / "model" / "model.safetensors"))
    assert all(torch.equal(bundle[k], v.float()) for k, v in ckpt["best_state"].items() if v.is_floating_point())
    rows = list(csv.DictReader(open(tmp_path / "runs" / "ema" / "metrics.csv")))
    ema = [float(row["ema_val_acc"]) for row in rows]
    assert len(ema) == 3 and all(0 <= a <= 1 for a in ema)  # a number every epoch, not nan
    assert all(float(row["val_acc"]) >= a for row, a in zip(rows, ema))  # val_acc is the better of the two
    r = run("train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode", "finetune", "--epochs", "1",
                                                      "--name", "plain"))
    assert list(csv.DictReader(open(tmp_path / "runs" / "plain" / "metrics.csv")))[0]["ema_val_acc"] == "nan"
