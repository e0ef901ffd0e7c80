"""The time-budget planner: given measured rates it picks the expected stages and fits the budget; a run keeps to
its plan and records it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import make_class_folders, tiny_args
from tunevision.cli.main import main
from tunevision.core.errors import TunevisionError
from tunevision.classify.plan import FINISH_SECONDS, Rates, make_plan, parse_budget

# hymenoptera-sized run on a 2-core CPU: features 100 img/s, trunk 150 img/s, top training 60 img/s
RATES = Rates(features=100.0, trunk=150.0, top_train=60.0)


def test_parse_budget() -> None:
    assert [parse_budget(t) for t in ("90", "90s", "2m", "1.5m", "1h", "")] == [90, 90, 120, 90, 3600, 0]
    with pytest.raises(TunevisionError, match="time_budget"):
        parse_budget("two minutes")


@pytest.mark.parametrize("budget, views, partial", [
    (12, 0, 0),     # not even the head fits ((245 + 153) / 100 + 1 s + the finish): it is planned anyway
    (18, 0, 0),     # a view (2.45 s) would fit 18 s but not the 90 % margin
    (30, 3, 0),     # three views; partial fine-tuning needs 3 epochs and does not fit
    (60, 3, 3),     # partial fine-tuning: 4.3 s of activations, then 8.2 s per epoch, within 54 s
    (600, 3, 6),    # capped at 6 epochs: a bigger budget is not spent for nothing
])
def test_planner_picks_stages_that_fit(budget: float, views: int, partial: int) -> None:
    plan = make_plan(budget, used_s=2.0, n_train=245, n_val=153, rates=RATES)
    assert (plan.views, plan.partial_epochs) == (views, partial)
    assert plan.planned_s <= budget or (views, partial) == (0, 0)  # the head is the one stage always run
    names = [s.name for s in plan.stages]
    assert names[0] == "head on frozen features" and names[-1].startswith("finish")
    assert ("partial fine-tuning" in names) == bool(partial)


def test_planner_fine_tunes_the_whole_network_when_the_budget_pays_for_8_epochs() -> None:
    gpu = Rates(features=2000.0, trunk=4000.0, top_train=1500.0, network_train=600.0)
    plan = make_plan(120, used_s=5.0, n_train=3453, n_val=864, rates=gpu)  # flowers5 on a GPU
    assert (plan.views, plan.finetune_epochs, plan.partial_epochs) == (3, 14, 0)  # 6.2 s an epoch, 88 s left
    assert [s.name for s in plan.stages][-2:] == ["whole-network fine-tuning", "finish (calibrate, report)"]
    assert plan.planned_s <= 120
    assert make_plan(600, 5.0, 3453, 864, gpu).finetune_epochs == 20  # capped: more is not spent for nothing
    cpu = dataclasses.replace(RATES, network_train=20.0)  # Lite0 on 2 cores: 173 s an epoch of flowers5
    assert make_plan(600, 5.0, 3453, 864, cpu).finetune_epochs == 0  # 8 epochs would take 1,450 s
    assert make_plan(600, 2.0, 245, 153, cpu).finetune_epochs == 20  # hymenoptera: 13.8 s an epoch


def test_planner_cost_is_linear_in_the_images() -> None:
    small = make_plan(120, 0, 1000, 250, RATES)
    big = make_plan(120, 0, 10_000, 2_500, RATES)
    assert big.views < small.views or big.partial_epochs < small.partial_epochs
    assert big.stages[0].planned_s == pytest.approx(10 * (small.stages[0].planned_s - 1) + 1)
    assert big.planned_s > 120 - 1e-9 or big.views == 0  # only the head: the budget cannot be kept, and it says so
    assert big.stages[-1].planned_s == pytest.approx(FINISH_SECONDS + 2_500 / 100)


def test_a_budgeted_run_prints_and_records_its_plan(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", n=12)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                  "--time-budget", "60", "--name", "b")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())
    plan = summary["plan"]
    assert plan["budget_s"] == 60 and plan["stages"][0]["measured_s"] is not None
    assert "plan for a 60 s budget" in (tmp_path / "runs" / "b" / "train.log").read_text()
    assert summary["wall_seconds"] <= 60 * 1.15
    # a tiny network trains fast enough for whole-network fine-tuning to be planned, run and measured
    assert plan["finetune_epochs"] >= 8 and plan["stages"][-2]["measured_s"] is not None
    epochs = (tmp_path / "runs" / "b" / "metrics.csv").read_text().strip().splitlines()[1:]
    assert len(epochs) >= plan["finetune_epochs"] + 1  # the head's epochs, then the fine-tuning's, numbered on
    report = (tmp_path / "runs" / "b" / "report.html").read_text()
    assert "Time budget" in report and "whole-network fine-tuning" in report
    r = CliRunner().invoke(main, ["train", str(data), "--mode", "finetune", "--time-budget", "60"])
    assert r.exit_code == 2 and "time_budget is used by --mode auto only" in r.output
