"""Ablation of tunevision's training techniques on real data: what each one adds, in accuracy and wall time.

    python benchmarks/techniques.py                 # all rows (about 40 minutes on a 2-core CPU)
    python benchmarks/techniques.py --rows flowers  # only rows whose name contains "flowers"; others are kept

Two datasets from ../shared/datasets: hymenoptera (245 train / 153 val, its own split) and flowers5-300 (flowers5's
seeded 80/20 split, the training side cut to 60 images per class, the whole 864-image validation side; fine-tuning
all 3,453 training images costs ~3 minutes an epoch here, and small training sets are where transfer learning
matters most). Whole-network rows start from one baseline (fine-tune Lite0 at 224 px for 5 epochs: AdamW,
one-cycle, head LR 10x, no augmentation, no label smoothing) and change one thing each; "defaults" rows use
`tunevision train`'s own defaults for the mode. Every row: seed 0, decoded images cached beforehand (as for any
second run), features recomputed (the feature cache is emptied before each row). TTA rows re-score the named row's
bundle. Results go to benchmarks/results/techniques.json (merged by row name) and techniques.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunevision.core.config import DataConfig, RunConfig, TrainConfig
from tunevision.data.discover import discover
from tunevision.classify.evaluate import load_eval_set
from tunevision.classify.inference import TTA
from tunevision.api import load
from tunevision.models.backbones import create_backbone
from tunevision.classify.prepare import prepare_data
from tunevision.classify.train import fit
from tunevision.core.ui import RunLog

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
BASELINE = {"mode": "finetune", "epochs": 5, "augment": "none", "label_smoothing": 0.0}


@dataclass
class Row:
    name: str
    dataset: str                          # key of DATASETS
    train: dict = field(default_factory=dict)  # TrainConfig fields
    data: dict = field(default_factory=dict)   # DataConfig fields
    tta_of: str = ""                      # re-score this row's bundle with TTA instead of training


def whole_network_rows(ds: str) -> list[Row]:
    b = BASELINE
    return [
        Row(f"{ds}: baseline (fine-tune, no augmentation)", ds, dict(b), {"image_size": 224}),
        Row(f"{ds}: + augment default", ds, {**b, "augment": "default"}, {"image_size": 224}),
        Row(f"{ds}: + augment strong", ds, {**b, "augment": "strong"}, {"image_size": 224}),
        Row(f"{ds}: + mixup 0.2", ds, {**b, "mixup": 0.2}, {"image_size": 224}),
        Row(f"{ds}: + label smoothing 0.1", ds, {**b, "label_smoothing": 0.1}, {"image_size": 224}),
        Row(f"{ds}: + progressive resizing 128,160,224", ds, {**b, "sizes": "128,160,224"}, {"image_size": 224}),
        Row(f"{ds}: + EMA 0.9", ds, {**b, "ema": 0.9}, {"image_size": 224}),
        Row(f"{ds}: + fine_tune recipe (40 head epochs first)", ds, {**b, "freeze_epochs": 40},
            {"image_size": 224}),
        Row(f"{ds}: + layer-wise LR decay 0.7", ds, {**b, "layer_decay": 0.7}, {"image_size": 224}),
        Row(f"{ds}: + gradual unfreezing", ds, {**b, "unfreeze": "gradual"}, {"image_size": 224}),
        Row(f"{ds}: + TTA (baseline re-scored, 4 views)", ds, tta_of=f"{ds}: baseline (fine-tune, no augmentation)"),
        Row(f"{ds}: finetune defaults (5 epochs)", ds, {"mode": "finetune", "epochs": 5}),
        Row(f"{ds}: scratch, same recipe as finetune defaults", ds, {"mode": "scratch", "epochs": 5}),
        Row(f"{ds}: auto defaults (head on cached features)", ds, {"mode": "auto"}),
        Row(f"{ds}: auto, no augmented views", ds, {"mode": "auto", "views": 0}),
        Row(f"{ds}: auto, no label smoothing", ds, {"mode": "auto", "label_smoothing": 0.0}),
        Row(f"{ds}: auto, features at 224 px instead of 256", ds, {"mode": "auto"}, {"image_size": 224}),
        Row(f"{ds}: auto + TTA (4 views)", ds, tta_of=f"{ds}: auto defaults (head on cached features)"),
    ]


def flowers_subset(folder: Path, per_class: int = 60) -> Path:
    """A CSV: flowers5's seeded validation split whole, its training split cut to `per_class` images a class."""
    ds = discover(str(SHARED / "flowers5"))
    rng = np.random.default_rng(0)
    rows = [(s.path, ds.classes[s.label], "val") for s in ds.val]
    for c in range(len(ds.classes)):
        mine = [s for s in ds.train if s.label == c]
        rows += [(mine[i].path, ds.classes[c], "train") for i in sorted(rng.permutation(len(mine))[:per_class])]
    path = folder / "flowers5-300.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    return path


def run_row(row: Row, data: str, cache: Path, out: Path, bundles: dict[str, Path]) -> dict:
    if row.tta_of:
        m = load(bundles[row.tta_of], device="cpu")
        eval_set = load_eval_set(m.network, m.meta, data, m.runtime)
        plain, tta = eval_set.score(), eval_set.score(TTA(crops=2))
        return {"acc": tta.accuracy, "seconds": tta.seconds, "note": f"plain {plain.accuracy:.1%} in "
                f"{plain.seconds:.1f} s; TTA costs {tta.seconds / plain.seconds:.1f}x the inference time"}
    cfg = RunConfig(data=DataConfig(data=data, cache_dir=str(cache), **row.data), train=TrainConfig(**row.train),
                    out=str(out))
    prepare_data(cfg, create_backbone(cfg.model.backbone), RunLog(quiet=True))  # decode into the cache, untimed
    shutil.rmtree(cache / "features", ignore_errors=True)
    start = time.perf_counter()
    result = fit(cfg, log=RunLog(quiet=True))
    seconds = time.perf_counter() - start
    bundles[row.name] = result.run_dir
    return {"acc": result.evaluation.accuracy, "best_epoch_acc": result.best_acc, "seconds": seconds,
            "note": ", ".join(f"{k}={v}" for k, v in {**row.train, **row.data}.items())}


def write_markdown(results: dict, path: Path, machine: str) -> None:
    lines = ["# Techniques: an ablation on real data", "",
             f"Machine: {machine}. Command: `python benchmarks/techniques.py` (see its docstring for the protocol). "
             "One seed (0): on hymenoptera one validation image is 0.65 points, on flowers5-300 0.12 points; "
             "differences under ~2 points are within the noise of a single seed.", "",
             "| row | val accuracy (bundle) | wall seconds | settings / note |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['acc']:.1%} | {r['seconds']:.1f} | {r['note']} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="", help="run only rows whose name contains this text")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "techniques.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
               f"{time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets = {"hymenoptera": str(SHARED / "hymenoptera"), "flowers5-300": str(flowers_subset(tmp))}
        rows = [r for ds in datasets for r in whole_network_rows(ds) if args.rows in r.name]
        bundles: dict[str, Path] = {}
        for row in rows:
            if row.tta_of and row.tta_of not in bundles:
                print(f"skip {row.name}: needs {row.tta_of} in the same run", flush=True)
                continue
            print(f"{row.name} ...", flush=True)
            results[row.name] = run_row(row, datasets[row.dataset], tmp / "cache", tmp / "runs", bundles)
            r = results[row.name]
            print(f"  {r['acc']:.1%} in {r['seconds']:.1f} s ({r['note']})", flush=True)
            json_path.write_text(json.dumps(results, indent=2))
            write_markdown(results, out / "techniques.md", machine)
    print((out / "techniques.md").read_text())


if __name__ == "__main__":
    main()
