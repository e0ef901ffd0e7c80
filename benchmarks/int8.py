"""int8 ONNX vs fp32 ONNX vs eager PyTorch: images/s and validation accuracy of one bundle, measured in one run.

    python benchmarks/int8.py [--out benchmarks/results/speed.md]

For hymenoptera and flowers5 (seeded 80/20): train the default `auto` model, export fp32 ONNX and the gated int8
ONNX (`tunevision export --int8`: 256 training images calibrate, the validation split judges), then score the
validation split with each runtime and time inference at batch 32. `benchmarks/speed.py` runs this as its last
part; run alone, it replaces the "int8" section of speed.md. Target: int8 >= 2x fp32 ONNX with <= 1 point lost.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"hymenoptera": ROOT.parent / "shared" / "datasets" / "hymenoptera",
            "flowers5": ROOT.parent / "shared" / "datasets" / "flowers5"}


def rate(run, x: np.ndarray, reps: int = 5) -> float:
    run(x)
    t = time.perf_counter()
    for _ in range(reps):
        run(x)
    return len(x) * reps / (time.perf_counter() - t)


def measure(name: str, data: Path, tmp: Path) -> str:
    import tunevision as tv
    from tunevision.engine.export import onnx_session
    from tunevision.classify.quantize import quantize_bundle
    model = tv.fit(str(data), cache_dir=str(tmp / "cache"), out=str(tmp / "runs"), quiet=True)
    report = quantize_bundle(model.run_dir)  # also writes the fp32 export beside it
    export = model.run_dir / "model" / "export"
    ev = model.evaluation
    from tunevision.data.sources import Sample, load_images
    images, _ = load_images([Sample(p, 0) for p in ev.paths], model.meta.resize_size, cache_dir=None)
    x = model.preprocess.batch(torch.from_numpy(np.array(images))).contiguous().numpy()
    accs, speeds = {}, {}
    net = model.network.float().eval()
    with torch.no_grad():
        def eager(b):
            return torch.softmax(net(torch.from_numpy(b)), 1).numpy()
        for label, run in (("eager", eager), ("fp32", lambda b, s=onnx_session(export / "model.onnx"):
                                                s.run(None, {"input": b})[0]),
                           ("int8", lambda b, s=onnx_session(export / "model.int8.onnx"): s.run(None, {"input": b})[0])):
            probs = np.concatenate([run(x[i:i + 32]) for i in range(0, len(x), 32)])
            accs[label] = float((probs.argmax(1) == ev.labels).mean())
            speeds[label] = rate(run, x[:32])
    return (f"| {name} ({len(x)} val, {model.meta.image_size} px) | {speeds['eager']:.0f} / {accs['eager']:.2%} | "
            f"{speeds['fp32']:.0f} / {accs['fp32']:.2%} | {speeds['int8']:.0f} / {accs['int8']:.2%} | "
            f"{speeds['int8'] / speeds['fp32']:.2f}x | {(accs['int8'] - accs['fp32']) * 100:+.1f} | "
            f"{report.top1_agreement:.1%} |")


def section() -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in DATASETS.items():
            if data.is_dir():
                print(f"int8: {name} ...", flush=True)
                rows.append(measure(name, data, Path(tmp) / name))
    return "\n".join([
        "## int8", "",
        f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}. Command: `python benchmarks/int8.py`. Each "
        "row: the default `auto` bundle of that dataset; images/s at batch 32 / validation accuracy.", "",
        "| data | eager PyTorch fp32 | ONNX Runtime fp32 | ONNX Runtime int8 | int8 vs fp32 speed | accuracy change "
        "(points) | top-1 agreement |", "| --- | --- | --- | --- | --- | --- | --- |", *rows, ""])


def replace_section(path: Path, text: str) -> None:
    old = path.read_text() if path.is_file() else ""
    path.write_text(old.split("## int8")[0].rstrip() + "\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.md"))
    args = ap.parse_args()
    text = section()
    print(text)
    replace_section(Path(args.out), text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
