from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from tests.conftest import tiny_args
from tunevision.cli.main import main
from tunevision.classify.lr_range import suggest_lr


def test_suggestion_lies_on_the_descending_part() -> None:
    lrs = np.logspace(-6, 0, 60)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1.5, (x + 1.5) ** 2 * 4, 0)
    s = suggest_lr(lrs, losses)
    i_min, i_s = int(np.argmin(losses)), int(np.where(lrs == s)[0][0])
    assert i_s < i_min and losses[i_s] > losses[i_min]
    assert 10 ** -3.5 < s < 10 ** -2.5  # the steepest point of the sigmoid is at 1e-3


def test_lr_find_command_and_lr_auto(colour_folders: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = str(tmp_path / "c")
    r = CliRunner().invoke(main, ["lr-find", str(colour_folders), *tiny_args(cache, tmp_path / "runs"),
                                  "--steps", "40"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "suggested learning rate" in r.output and (tmp_path / "runs" / "lr_find.png").is_file()  # --out
    r = CliRunner().invoke(main, ["train", str(colour_folders), *tiny_args(cache, tmp_path / "runs", "--mode",
                                  "finetune", "--epochs", "1", "--lr", "auto", "--name", "a")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lr = yaml.safe_load((tmp_path / "runs" / "a" / "config.yaml").read_text())["train"]["lr"]
    assert isinstance(lr, float) and 1e-7 <= lr <= 1 and (tmp_path / "runs" / "a" / "lr_find.png").is_file()
    r = CliRunner().invoke(main, ["train", str(colour_folders), "--lr", "fast"])
    assert r.exit_code == 2
