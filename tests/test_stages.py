"""Every run says where its time went: summary.json's `stages` add up to the run's wall time, and the log ends
with them."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import tiny_args
from tests.scenes import write_voc
from tunevision.cli.main import main


def _stages(run: Path) -> tuple[dict, float]:
    summary = json.loads((run / "summary.json").read_text())
    return summary["stages"], summary["seconds"]


def test_a_classification_run_records_its_stages(tmp_path: Path, colour_folders: Path) -> None:
    r = CliRunner().invoke(main, ["train", str(colour_folders), "--epochs", "2",
                                  *tiny_args(str(tmp_path / "c"), tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs").iterdir())
    stages, seconds = _stages(run)
    for name in ("start-up", "backbone", "discovery", "decode", "features train eval view",
                 "features train augmented view", "features val eval view", "training", "calibration and evaluation",
                 "report", "other"):
        assert name in stages, (name, stages)
    inside = sum(v for k, v in stages.items() if k != "start-up")
    assert abs(inside - seconds) < 0.1 * seconds + 0.5, (inside, seconds)
    assert "time by stage: start-up" in (run / "train.log").read_text()


def test_a_detection_run_records_its_stages(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "v", n=6)
    r = CliRunner().invoke(main, ["train", str(data), "--epochs", "1", "--image-size", "64", "--no-pretrained",
                                  "--val-fraction", "0.25", "--device", "cpu", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    stages, seconds = _stages(next((tmp_path / "runs").iterdir()))
    assert {"discovery", "decode", "model", "training", "evaluation", "report"} <= set(stages)
    assert abs(sum(v for k, v in stages.items() if k != "start-up") - seconds) < 0.1 * seconds + 0.5


def test_a_frozen_body_is_scored_from_its_fp32_validation_features_without_a_second_pass(
        tmp_path: Path, colour_folders: Path, monkeypatch) -> None:
    import csv

    import numpy as np

    import tunevision as tv
    import tunevision.classify.train as train
    calls = []
    real = train.predict_probs
    monkeypatch.setattr(train, "predict_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tv.fit(str(colour_folders), backbone="tiny_cnn", pretrained=False, epochs=3, device="cpu",
                   cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), quiet=True)
    assert calls == []  # the final evaluation reused the validation features
    rows = list(csv.DictReader(open(model.run_dir / "eval" / "predictions.csv")))
    again = tv.load(str(model.run_dir), device="cpu").predict_proba([r["path"] for r in rows])
    saved = np.array([float(r["confidence"]) for r in rows])
    assert np.allclose(again.max(1), saved, atol=1e-4)
