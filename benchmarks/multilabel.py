"""Multi-label on miml-scenes: tunevision's defaults against a frozen Lite0 linear probe, on the same seeded split.

    python benchmarks/multilabel.py [--csv ../shared/datasets/miml-scenes/labels.csv] [--out benchmarks/results/quality.md]

The probe: Lite0 ImageNet features of the centre crop, one L2-regularised logistic regression per label (L-BFGS),
thresholds 0.5. The defaults: `tunevision.fit(CSV)` (auto mode: cached features with augmented views, a sigmoid
head, per-label temperatures and F1 thresholds chosen on validation). Both score the split tunevision draws (seed
0, 20 % validation). Prints both rows and replaces the "Multi-label" section of the results file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def probe(csv_path: str) -> dict:
    from tunevision.classify.features import extract_features
    from tunevision.classify.multilabel import MultiLabelEvaluation
    from tunevision.classify.prepare import targets
    from tunevision.core.runtime import resolve_runtime
    from tunevision.data.augment import eval_view
    from tunevision.data.discover import discover
    from tunevision.data.sources import load_images
    from tunevision.models.backbones import build_classifier, create_backbone
    start = time.perf_counter()
    ds = discover(csv_path, val_fraction=0.2, seed=0)
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    model = build_classifier(backbone, len(ds.classes)).eval()
    rt = resolve_runtime("cpu", "fp32")
    size = 224
    feats = {}
    for name, samples in (("train", ds.train), ("val", ds.val)):
        images, _ = load_images(samples, round(size / 0.875), cache_dir=None)
        feats[name] = extract_features(model, images, lambda b, i: eval_view(b, size), rt)
    y_train, y_val = targets(ds.train, len(ds.classes), True), targets(ds.val, len(ds.classes), True).numpy()
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    x_train, x_val = (feats["train"] - mean) / std, (feats["val"] - mean) / std
    probs = np.zeros_like(y_val)
    for k in range(len(ds.classes)):  # one logistic regression per label
        w = torch.zeros(x_train.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y_train[:, k]) + \
                1e-3 * (w ** 2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        probs[:, k] = torch.sigmoid(x_val @ w + b).detach().numpy()
    ev = MultiLabelEvaluation(ds.classes, y_val, probs, [s.path for s in ds.val], np.full(len(ds.classes), 0.5))
    return {"method": "frozen Lite0 linear probe (centre crop, logistic regression per label, threshold 0.5)",
            "map": ev.map, "micro_f1": ev.micro_f1, "macro_f1": ev.macro_f1, "exact": ev.exact_match,
            "seconds": time.perf_counter() - start}


def defaults(csv_path: str, **options) -> dict:
    """tv.fit from a cold cache: the wall time includes decoding and feature extraction."""
    import tunevision as tv
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = tv.fit(csv_path, out=f"{tmp}/runs", cache_dir=f"{tmp}/cache", quiet=True, **options)
        wall = time.perf_counter() - start
        summary = json.loads((model.run_dir / "summary.json").read_text())
    name = ", ".join(f"{k}={v}" for k, v in options.items())
    return {"method": f"tunevision defaults (tv.fit(CSV{', ' + name if name else ''}): auto mode)",
            "map": summary["final_val_map"], "micro_f1": summary["micro_f1"], "macro_f1": summary["macro_f1"],
            "exact": summary["exact_match"], "seconds": wall}


def single_label_seconds(csv_path: str) -> float:
    """A single-label `auto` run on the same images (each image's first label; unlabelled ones left out), cold."""
    import csv

    import tunevision as tv
    from tunevision.data.tables import read_label_table
    table = read_label_table(Path(csv_path))
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "single.csv"
        with open(single, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows((p, ls[0]) for p, ls in zip(table.paths, table.labels) if ls)
        start = time.perf_counter()
        tv.fit(str(single), out=f"{tmp}/runs", cache_dir=f"{tmp}/cache", quiet=True, audit=False)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=str(ROOT.parent / "shared" / "datasets" / "miml-scenes" / "labels.csv"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    args = ap.parse_args()
    rows = [probe(args.csv), defaults(args.csv, resize="crop"), defaults(args.csv, features="last"),
            defaults(args.csv)]
    single = single_label_seconds(args.csv)
    lines = ["## Multi-label (miml-scenes)", "",
             f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}; `python benchmarks/multilabel.py`; the split "
             "tunevision draws (seed 0, 20 % validation: 1,600 train / 400 val), scored on the validation images.", "",
             "| method | macro mAP | micro F1 | macro F1 | exact match | wall s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['map']:.3f} | {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['exact']:.3f} | "
              f"{r['seconds']:.0f} |" for r in rows]
    lines += ["", f"Time against a single-label `auto` run on the same images (each image's first label, cold "
              f"cache): {single:.0f} s, so the defaults take {rows[-1]['seconds'] / single:.2f}x (target <= 2x). "
              "Both tunevision rows ran from a cold cache (decoding and features included); `resize=crop` is the "
              "centre square every single-label run uses, the defaults squash the whole photo (`--resize auto`); "
              "`features=last` is the head on the final features alone, the defaults also read the pooled outputs of "
              "the last four block stages."]
    section = "\n".join(lines) + "\n"
    print(section)
    out = Path(args.out)
    text = out.read_text() if out.is_file() else "# Quality\n\n"
    head, _, rest = text.partition("## Multi-label (miml-scenes)")
    tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
    out.write_text(head.rstrip() + "\n\n" + section + tail)


if __name__ == "__main__":
    main()
