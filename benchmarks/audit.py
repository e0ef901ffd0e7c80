"""The data audit (#25) on real data, one run: label errors among seeded flips, injected duplicates, the cost.

    python benchmarks/audit.py [--parts labels,duplicates,cost] [--out benchmarks/results/audit.md]

* labels: hymenoptera with 10 training labels flipped (flip seeds 0-9: ten flips move a figure by 0.1 each, so
  five seeds said little), caltech101-25 and flowers5 with 5 % of them flipped (seeds 0-2 and 0-1), miml-scenes
  (multi-label) with one label gained or lost on 5 % of them (seeds 0-2), each written as a path,label,split CSV
  over tunevision's own seeded split; `tv.audit(csv)`; the flagged images are the
  label rows in the audit's order (least label quality first), cut at 2 x flips.
  precision = flips among them / flagged, recall = flips among them / flips; mean over the seeds. Beside them, the
  same figures beyond the data's own doubts: the images an audit of the labels as given (no flips) already flags
  are set aside from the ranking before the cut (a flipped one stays), since a flag there is a real label problem
  as often as not (flowers5: `audit_flowers5_own_doubts.png`, the 24 most doubtful labels as given).
* duplicates: 20 training images of flowers5 copied into validation (in turn: exact copy, resized to 75 %,
  recompressed at JPEG quality 60, cropped by 6 % each side); found = pairs the audit reports between an original
  and its copy, false = every other pair reported; plus the cosine of each kind and how many natural pairs pass
  each threshold, and the leakage line.
* cost: a default `tv.fit(flowers5)` from a cold cache (which now runs the audit inside), then `tv.audit` on the
  same cache (warm), then `tv.audit` from a second cold cache; ratios against the train run.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets"


def split_rows(data: Path) -> tuple[list[list[str]], list[str]]:
    """[path, label, split] rows over tunevision's own seeded split; a multi-label image's labels joined by `;`."""
    from tunevision.data.discover import discover
    ds = discover(str(data), seed=0)

    def label(s) -> str:
        return ";".join(ds.classes[j] for j in s.labels) if ds.multilabel else ds.classes[s.label]
    rows = [[str(Path(s.path).resolve()), label(s), split]
            for split, items in (("train", ds.train), ("val", ds.val)) for s in items]
    return rows, ds.classes


def flip(row: list[str], classes: list[str], rng: np.random.Generator, multilabel: bool) -> None:
    """A single label to another class; for multi-label data one label, drawn from all, gained or lost."""
    if multilabel:
        labels = set(filter(None, row[1].split(";")))
        labels ^= {classes[rng.integers(len(classes))]}
        row[1] = ";".join(sorted(labels))
        return
    others = [c for c in classes if c != row[1]]
    row[1] = others[rng.integers(len(others))]


def write_csv(rows: list[list[str]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return path


def own_doubts(name: str, data: Path, work: Path, cache: str, picture: Path | None = None) -> set[str]:
    """The label issues an audit finds in the data as given, with no flip: the data's own doubts. `picture`: the
    24 most doubtful of them drawn there, each with its given and suggested label."""
    import tunevision as tv
    from tunevision.report.plots import grid_picture
    rows, _ = split_rows(data)
    result = tv.audit(str(write_csv(rows, work / f"{name}-as-given.csv")), out=work / f"{name}-audit-as-given",
                      quiet=True, cache_dir=cache)
    issues = result.issues("label")
    if picture is not None:
        top = sorted(issues, key=lambda r: float(r["score"]))[:24]
        grid_picture([np.asarray(Image.open(r["path"]).convert("RGB")) for r in top],
                     [f"{r['given']} -> {r['suggested']} {float(r['score']):.2f}" for r in top], columns=6
                     ).save(picture)
    return {r["path"] for r in issues}


def labels_part(name: str, data: Path, flips: float, work: Path, cache: str, seed: int = 0,
                own: set[str] = frozenset()) -> dict:
    import tunevision as tv
    rows, classes = split_rows(data)
    train = [i for i, r in enumerate(rows) if r[2] == "train"]
    rng = np.random.default_rng(seed)
    n = int(round(flips * len(train))) if flips < 1 else int(flips)
    flipped = rng.choice(train, n, replace=False)
    for i in flipped:
        flip(rows[i], classes, rng, multilabel=name in MULTILABEL)
    csv_path = write_csv(rows, work / f"{name}-flipped-{seed}.csv")
    started = time.perf_counter()
    result = tv.audit(str(csv_path), out=work / f"{name}-audit-{seed}", quiet=True, cache_dir=cache)
    seconds = time.perf_counter() - started
    truth = {rows[i][0] for i in flipped}
    ranked = [r["path"] for r in result.issues("label")]
    flagged = ranked[:2 * n]
    hits = sum(p in truth for p in flagged)
    beyond = [p for p in ranked if p in truth or p not in own][:2 * n]
    hits_beyond = sum(p in truth for p in beyond)
    return {"data": name, "seed": seed, "images": len(rows), "flips": n, "flagged_all": len(ranked),
            "flagged": len(flagged), "own_doubts": len(own),
            "precision": hits / max(1, len(flagged)), "recall": hits / n, "seconds": round(seconds, 1),
            "precision_beyond": hits_beyond / max(1, len(beyond)), "recall_beyond": hits_beyond / n,
            "probe_val_acc": result.summary.get("probe_val_acc")}


def inject(path: str, kind: str, out: Path) -> None:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if kind == "resized":
        im = im.resize((max(8, w * 3 // 4), max(8, h * 3 // 4)), Image.BICUBIC)
    elif kind == "cropped":
        im = im.crop((w * 6 // 100, h * 6 // 100, w - w * 6 // 100, h - h * 6 // 100))
    if kind == "exact":
        out.write_bytes(Path(path).read_bytes())
    else:
        im.save(out, "JPEG", quality=60 if kind == "q60" else 90)


def flickr_id(path: str) -> str:
    return Path(path).name.split("_")[0].split(".")[0]


def duplicates_part(work: Path, cache: str) -> dict:
    import tunevision as tv
    from tunevision.auditing.duplicates import candidate_pairs
    from tunevision.auditing.neighbours import nearest
    from tunevision.classify.embed import embed_data
    from tunevision.core.config import RunConfig
    from tunevision.core.ui import RunLog
    rows, _ = split_rows(DATA / "flowers5")
    train = [i for i, r in enumerate(rows) if r[2] == "train"]
    picked = np.random.default_rng(1).choice(train, 20, replace=False)
    kinds = ["exact", "resized", "q60", "cropped"]
    folder = work / "injected"
    folder.mkdir(exist_ok=True)
    injected = {}
    for k, i in enumerate(picked):
        copy = folder / f"{k:02d}-{kinds[k % 4]}.jpg"
        inject(rows[i][0], kinds[k % 4], copy)
        injected[str(copy.resolve())] = rows[i][0]
        rows.append([str(copy.resolve()), rows[i][1], "val"])
    csv_path = write_csv(rows, work / "flowers5-dups.csv")
    result = tv.audit(str(csv_path), out=work / "dups-audit", quiet=True, cache_dir=cache)
    pairs = [(r["path"], r["other"]) for r in result.rows if r["issue"] in ("duplicate", "leakage")]
    found = {c for c, o in injected.items() if (c, o) in pairs or (o, c) in pairs}
    other = [p for p in pairs if not (injected.get(p[0]) == p[1] or injected.get(p[1]) == p[0])]
    # flowers5 files some Flickr photos twice (the same photo id in two class folders, or at two sizes): those
    # pairs are real duplicates of the data, not false ones
    same_photo = [p for p in other if flickr_id(p[0]) == flickr_id(p[1])]
    false = [p for p in other if p not in same_photo]
    emb = embed_data(RunConfig.from_options(str(csv_path), cache_dir=cache), RunLog(quiet=True))
    x = emb.features / np.linalg.norm(emb.features, axis=1, keepdims=True)
    index = {p: i for i, p in enumerate(emb.paths)}
    by_kind: dict[str, list[float]] = {}
    for c, o in injected.items():
        by_kind.setdefault(Path(c).stem.split("-")[1], []).append(float(x[index[c]] @ x[index[o]]))
    copies = {index[c] for c in injected}
    every = nearest(emb.features, len(emb.features))  # every pair, not the audit's 16 nearest
    natural = {t: sum(1 for i, j, _ in candidate_pairs(every, t) if i not in copies and j not in copies)
               for t in (0.85, 0.90, 0.95)}
    return {"injected": 20, "found": len(found), "same_photo_pairs": len(same_photo), "false_pairs": len(false),
            "false_examples": [(Path(a).name, Path(b).name) for a, b in false[:10]],
            "min_cosine_by_kind": {k: round(min(v), 4) for k, v in by_kind.items()},
            "natural_pairs_at": natural, "summary": result.summary}


def cost_part(work: Path) -> dict:
    import tunevision as tv
    data = str(DATA / "flowers5")
    cold_a, cold_b = str(work / "cache-a"), str(work / "cache-b")
    t0 = time.perf_counter()
    model = tv.fit(data, quiet=True, cache_dir=cold_a, out=str(work / "runs"))
    train_s = time.perf_counter() - t0
    stages = json.loads((model.run_dir / "summary.json").read_text())["stages"]
    t0 = time.perf_counter()
    tv.audit(data, quiet=True, cache_dir=cold_a, out=work / "warm-audit")
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tv.audit(data, quiet=True, cache_dir=cold_b, out=work / "cold-audit")
    cold_s = time.perf_counter() - t0
    return {"train_s": round(train_s, 1), "in_run_audit_s": stages.get("audit"), "warm_audit_s": round(warm_s, 1),
            "cold_audit_s": round(cold_s, 1), "warm_ratio": round(warm_s / train_s, 3),
            "cold_ratio": round(cold_s / train_s, 3), "val_acc": model.evaluation.accuracy}


NOTES = "## Reading these figures"
# (data, flips: a count or a share of the training images, flip seeds)
SETS = [("hymenoptera", 10, 10), ("caltech101-25", 0.05, 3), ("flowers5", 0.05, 2), ("miml-scenes", 0.05, 3)]
MULTILABEL = {"miml-scenes"}  # a flip there toggles one of an image's five labels


def markdown(results: dict) -> str:
    lines = ["# Data audit (benchmarks/audit.py)", "", f"One run, {time.strftime('%Y-%m-%d')}, this machine (2 cores); "
             "every figure of a table measured in the same run.", ""]
    if "labels" in results:
        lines += ["## Label errors among seeded flips (flagged = cleanlab's ranked label issues, cut at 2 x flips)", "",
                  "Each flip seed flips other images. Mean over the seeds, then each seed's figures.", "",
                  "| data | images | flips | seeds | issues flagged (mean) | precision | recall | per seed P / R | "
                  "own doubts (no flips) | precision / recall beyond them | probe val acc | "
                  "audit s (first seed, features cached by the audit as given) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        by_data: dict[str, list[dict]] = {}
        for r in results["labels"]:
            by_data.setdefault(r["data"], []).append(r)
        for name, rs in by_data.items():
            p, rc = np.mean([r["precision"] for r in rs]), np.mean([r["recall"] for r in rs])
            per = ", ".join(f"{r['precision']:.2f} / {r['recall']:.2f}" for r in rs)
            pb, rb = np.mean([r["precision_beyond"] for r in rs]), np.mean([r["recall_beyond"] for r in rs])
            lines.append(f"| {name} | {rs[0]['images']} | {rs[0]['flips']} | {len(rs)} | "
                         f"{np.mean([r['flagged_all'] for r in rs]):.0f} | {p:.3f} | {rc:.3f} | {per} | "
                         f"{rs[0]['own_doubts']} | {pb:.3f} / {rb:.3f} | "
                         f"{rs[0]['probe_val_acc'] or 'n/a (multi-label: no single-label probe)'} | "
                         f"{rs[0]['seconds']} |")
        lines.append("")
    if "duplicates" in results:
        d = results["duplicates"]
        s = d["summary"]
        lines += ["## Duplicates: 20 flowers5 training images copied into validation", "",
                  f"- found {d['found']} of {d['injected']}; other pairs reported: {d['same_photo_pairs']} of the same "
                  f"Flickr photo filed twice in flowers5, {d['false_pairs']} others",
                  f"- lowest feature cosine of a copy with its original, by kind: {d['min_cosine_by_kind']}",
                  f"- distinct pairs (no copy in them) above a feature cosine of 0.85 / 0.90 / 0.95: "
                  f"{list(d['natural_pairs_at'].values())}: why the rule also matches thumbnails",
                  f"- leakage line: probe val accuracy {s.get('probe_val_acc')} with the {len(s['leaked_val'])} "
                  f"leaked images, {s.get('probe_val_acc_without_leaked')} without",
                  f"- the other pairs (first 10): {d['false_examples']}", ""]
    if "cost" in results:
        c = results["cost"]
        lines += ["## Cost on flowers5 (4,317 images)", "", "| run | seconds | / train run |", "| --- | --- | --- |",
                  f"| default train, cold cache (audit inside: {c['in_run_audit_s']} s) | {c['train_s']} | 1 |",
                  f"| audit after it (same cache) | {c['warm_audit_s']} | {c['warm_ratio']} |",
                  f"| audit, cold cache | {c['cold_audit_s']} | {c['cold_ratio']} |", "",
                  f"Train run validation accuracy {c['val_acc']:.4f}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="labels,duplicates,cost")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit.md"))
    args = ap.parse_args()
    parts = args.parts.split(",")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp), str(Path(tmp) / "cache")
        if "labels" in parts:
            results["labels"] = []
            for name, flips, seeds in SETS:
                picture = Path(args.out).parent / f"audit_{name}_own_doubts.png" if name == "flowers5" else None
                own = own_doubts(name, DATA / name, work, cache, picture)
                results["labels"] += [labels_part(name, DATA / name, flips, work, cache, seed, own)
                                      for seed in range(seeds)]
            print(json.dumps(results["labels"], indent=1))
        if "duplicates" in parts:
            results["duplicates"] = duplicates_part(work, cache)
            print(json.dumps(results["duplicates"], indent=1, default=str))
        if "cost" in parts:
            results["cost"] = cost_part(work)
            print(json.dumps(results["cost"], indent=1))
    out = Path(args.out)
    # the notes written after looking at a run's images survive a rerun (update their figures by hand)
    notes = out.read_text().partition(NOTES)[2] if out.is_file() else ""
    out.write_text(markdown(results) + ("\n" + NOTES + notes if notes else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
