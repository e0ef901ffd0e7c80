"""Accuracy against wall time for `auto --time-budget`, per dataset and budget, cold cache, start to finish.

    python benchmarks/quality.py [--budgets 30,120,600] [--seeds 0] [--out benchmarks/results/quality.md]

Datasets: hymenoptera (its own split), flowers5 (seeded 80/20) and caltech101-25 (its own split). For each run the
table gives the plan, the wall time against the budget, the best validation accuracy of each stage (the head epochs
and the partial fine-tuning epochs, read from metrics.csv) and the accuracy of the bundle kept.
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
    partial = [float(r["val_acc"]) for r in rows[40:]]
    return {"data": name, "budget": budget, "seed": seed, "wall": wall, "views": plan["views"],
            "partial_epochs": plan["partial_epochs"], "head": max(head), "partial": max(partial) if partial else None,
            "kept": summary["final_val_acc"], "best_epoch": summary["best_epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="30,120,600")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    args = ap.parse_args()
    runs = []
    for name in args.data.split(","):
        for budget in map(int, args.budgets.split(",")):
            for seed in map(int, args.seeds.split(",")):
                print(f"{name}, budget {budget} s, seed {seed} ...", flush=True)
                runs.append(one_run(name, budget, seed))
                print(runs[-1], flush=True)
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    lines = ["# auto --time-budget: accuracy against wall time", "",
             f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; cold cache, start to finish, Lite0. Command: "
             f"`python benchmarks/quality.py --budgets {args.budgets} --seeds {args.seeds}`.", "",
             "| data | budget s | wall s | views | partial epochs | head (best val) | partial (best val) | kept | seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['data']} | {r['budget']} | {r['wall']:.0f} | {r['views']} | {r['partial_epochs']} | "
              f"{pct(r['head'])} | {pct(r['partial'])} | {pct(r['kept'])} | {r['seed']} |" for r in runs]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
