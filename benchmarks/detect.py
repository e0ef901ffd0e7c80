"""Detection and segmentation fine-tuning: held-out mAP (mIoU) against wall time, per dataset and architecture.

    python benchmarks/detect.py [--runs pennfudan:detect:fasterrcnn,raccoon:detect:fasterrcnn,...]
                                [--epochs 0] [--keep DIR] [--out benchmarks/results/detect.md]

Each run is `tunevision.fit(DATA, task=..., arch=...)` with the defaults (seeded 80/20 split, Lite0 ImageNet
weights, nothing downloaded), timed start to finish; rows are appended to the results file as they finish, so a
long benchmark can be stopped and resumed with the remaining runs.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ("pennfudan:detect:fasterrcnn,raccoon:detect:fasterrcnn,pennfudan:segment:lraspp,"
                "pennfudan:detect:fcos,raccoon:detect:fcos")
HEADER = ["| data | task | arch | epochs | train images | val images | wall s | mAP@0.5 | mAP@0.5:0.95 | mIoU | "
          "best epoch |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def one_run(name: str, task: str, arch: str, epochs: int, keep: str) -> dict:
    import tunevision as tv
    data = ROOT.parent / "shared" / "datasets" / name
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = tv.fit(str(data), task=task, arch=arch, epochs=epochs, out=keep or f"{tmp}/runs", quiet=True)
        wall = time.perf_counter() - start
        summary = json.loads((model.run_dir / "summary.json").read_text())
    return {"data": name, "task": task, "arch": arch, "epochs": summary["epochs_run"], "wall": round(wall),
            "train": summary["train_images"], "val": summary["val_images"], "map_50": summary.get("map_50"),
            "map": summary.get("map"), "miou": summary.get("miou"), "best_epoch": summary["best_epoch"]}


def row(r: dict) -> str:
    f = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"| {r['data']} | {r['task']} | {r['arch']} | {r['epochs']} | {r['train']} | {r['val']} | {r['wall']} | "
            f"{f(r['map_50'])} | {f(r['map'])} | {f(r['miou'])} | {r['best_epoch']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated data:task:arch")
    ap.add_argument("--epochs", type=int, default=0, help="0 = the task's default")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detect.md"))
    ap.add_argument("--keep", default="", help="keep the run folders under this folder (default: a temp folder)")
    args = ap.parse_args()
    out = Path(args.out)
    if not out.is_file():
        out.write_text("\n".join([
            "# Detection and segmentation fine-tuning: held-out scores against wall time", "",
            f"{os.cpu_count()} CPU cores, no GPU; Lite0 ImageNet weights (offline), seeded 80/20 split, start to "
            "finish (decode, training with a validation pass per epoch, final evaluation, report). Command: "
            f"`python benchmarks/detect.py --runs ...`.", "", *HEADER, ""]))
    for spec in args.runs.split(","):
        name, task, arch = spec.split(":")
        print(f"{name} {task} {arch} ...", flush=True)
        r = one_run(name, task, arch, args.epochs, args.keep)
        print(r, flush=True)
        with open(out, "a") as f:
            f.write(row(r) + "\n")


if __name__ == "__main__":
    main()
