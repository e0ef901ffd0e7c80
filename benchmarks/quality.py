"""Accuracy against wall time for `auto --time-budget`, per dataset and budget, cold cache, start to finish.

    python benchmarks/quality.py [--budgets 30,120,600] [--seeds 0] [--decide 120] [--out ...quality.md]

The rows at the `--decide` budget (the default's) also run with a second seed (seed 1: another split for flowers5).

Datasets: hymenoptera (its own split), flowers5 (seeded 80/20) and caltech101-25 (its own split). For each run the
table gives the plan, the wall time against the budget, the best validation accuracy of each stage (the head epochs,
then the partial or whole-network fine-tuning epochs, read from metrics.csv) and the accuracy of the bundle kept.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["hymenoptera", "flowers5", "caltech101-25"]
NOTES = "<!-- notes: kept when the table is rewritten -->"


def one_run(name: str, budget: int, seed: int) -> dict:
    import tunevision as tv
    data = ROOT.parent / "shared" / "datasets" / name
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = tv.fit(str(data), time_budget=str(budget), seed=seed, cache_dir=f"{tmp}/cache", out=f"{tmp}/runs",
                       quiet=True)
        wall = time.perf_counter() - start
        summary = json.loads((model.run_dir / "summary.json").read_text())
        rows = list(csv.DictReader(open(model.run_dir / "metrics.csv")))
    plan = summary["plan"]
    head = [float(r["val_acc"]) for r in rows[:40]]
    adapted = [float(r["val_acc"]) for r in rows[40:]]
    stage = (f"whole x{plan['finetune_epochs']}" if plan["finetune_epochs"] else
             f"partial x{plan['partial_epochs']}" if plan["partial_epochs"] else "")
    return {"data": name, "budget": budget, "seed": seed, "wall": wall, "views": plan["views"], "stage": stage,
            "head": max(head), "adapted": max(adapted) if adapted else None,
            "kept": summary["final_val_acc"], "best_epoch": summary["best_epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="30,120,600")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--decide", type=int, default=120, help="budget whose rows get a second seed")
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    args = ap.parse_args()
    runs = []
    for name in args.data.split(","):
        for budget in map(int, args.budgets.split(",")):
            seeds = [int(v) for v in args.seeds.split(",")]
            for seed in seeds + ([max(seeds) + 1] if budget == args.decide else []):
                print(f"{name}, budget {budget} s, seed {seed} ...", flush=True)
                runs.append(one_run(name, budget, seed))
                print(runs[-1], flush=True)
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    lines = ["# auto --time-budget: accuracy against wall time", "",
             f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; cold cache, start to finish, Lite0 (fine-tuning keeps "
             "the pretrained BatchNorm statistics). Command: "
             f"`python benchmarks/quality.py --budgets {args.budgets} --seeds {args.seeds} --decide {args.decide}`.", "",
             "| data | budget s | wall s | views | fine-tuning | head (best val) | fine-tuned (best val) | kept | seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['data']} | {r['budget']} | {r['wall']:.0f} | {r['views']} | {r['stage']} | "
              f"{pct(r['head'])} | {pct(r['adapted'])} | {pct(r['kept'])} | {r['seed']} |" for r in runs]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    old = out.read_text() if out.is_file() else ""
    if NOTES in old:  # what was written by hand about the table (and the stage ablations) stays
        text += "\n" + old[old.index(NOTES):]
    out.write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
