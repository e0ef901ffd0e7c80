"""GPU throughput of the real training step, measured in one run; writes benchmarks/results/gpu.md on CUDA.

    python benchmarks/gpu.py                 # on a CUDA machine: the table below, 1 vs N GPUs when N > 1
    python benchmarks/gpu.py --device cpu    # smoke test anywhere: tiny sizes, prints only

Rows: whole-network fine-tuning images/s of Lite0 at 224 px through tunevision's own `train_one_epoch` (uint8
batches augmented on the device, channels_last), eager vs torch.compile and fp32 vs bf16 autocast; frozen-feature
extraction images/s; the default `auto` run on hymenoptera start to finish (time to >= 95 %); and, with several
GPUs, the same fine-tuning step under torchrun/DDP on all of them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def finetune_ips(device: str, precision: str, compile_: bool, steps: int, batch: int, size: int) -> float:
    from tunevision.data import augment as aug
    from tunevision.core.config import TrainConfig
    from tunevision.core.distributed import init_from_env
    from tunevision.classify.loops import train_one_epoch
    from tunevision.models.backbones import build_classifier, create_backbone
    from tunevision.engine.optim import make_optimizer, make_scheduler
    from tunevision.core.runtime import compiled_for_training, resolve_runtime
    from tunevision.core.ui import RunLog
    d = init_from_env(device)
    rt = resolve_runtime(device, precision, training=True)
    model = build_classifier(create_backbone("efficientnet_lite0"), 10).to(rt.device).to(
        memory_format=torch.channels_last)
    n = batch * steps * d.world
    images = np.random.default_rng(0).integers(0, 255, (n, round(size / 0.875), round(size / 0.875), 3), np.uint8)
    labels = torch.randint(0, 10, (n,))
    t = TrainConfig(mode="finetune", batch_size=batch * d.world, compile=compile_)
    cfg = type("Cfg", (), {"train": t})()
    opt = make_optimizer(model, t, lr=1e-4)
    trained = model
    if compile_:
        trained = compiled_for_training(model, torch.rand(batch, 3, size, size, device=rt.device).contiguous(
            memory_format=torch.channels_last), RunLog())
    if d.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[rt.device.index])
    pipeline = aug.make_pipeline("default", size)
    gen = torch.Generator().manual_seed(0)
    sched = make_scheduler(opt, "cosine", steps * 2)
    for _ in ("warm-up", "timed"):  # the first pass compiles kernels / autotunes
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(trained, images, labels, pipeline, opt, sched, rt, cfg, gen, lambda k: None, d=d)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return n / seconds  # all ranks' images per second (each rank measures the same wall time)


def feature_ips(device: str, n: int, size: int) -> float:
    from tunevision.classify.features import extract_features
    from tunevision.models.backbones import build_classifier, create_backbone
    from tunevision.data.preprocess import Preprocessing
    from tunevision.core.runtime import resolve_runtime
    rt = resolve_runtime(device)
    model = build_classifier(create_backbone("efficientnet_lite0"), 2).to(rt.device).to(
        memory_format=torch.channels_last)
    prep = Preprocessing.for_size(size, 0.875)
    images = np.random.default_rng(0).integers(0, 255, (n, prep.resize_size, prep.resize_size, 3), np.uint8)
    extract_features(model, images[:64], lambda b, i: prep.batch(b), rt)
    start = time.perf_counter()
    extract_features(model, images, lambda b, i: prep.batch(b), rt, batch_size=256 if device != "cpu" else 64)
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def auto_run(device: str) -> tuple[float, float]:
    import tunevision as tv
    data = ROOT.parent / "shared" / "datasets" / "hymenoptera"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = tv.fit(str(data), device=device, cache_dir=tmp, out=tmp, quiet=True)
        return time.perf_counter() - start, model.evaluation.accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.md"))
    args = ap.parse_args()
    cpu = args.device == "cpu"
    steps, batch, size = (2, 8, 64) if cpu else (30, 128, 224)
    if args.ddp_worker:  # one rank of the multi-GPU row
        ips = finetune_ips(args.device, "bf16", False, steps, batch, size)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(os.environ["GPU_BENCH_OUT"]).write_text(f"{ips:.1f}")
        return
    if not cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for the smoke test")
    rows = []
    for precision in ("fp32", "bf16"):
        for compile_ in (False, True):
            ips = finetune_ips(args.device, precision, compile_, steps, batch, size)
            rows.append((f"fine-tune Lite0 {size} px, batch {batch}, {precision}, {'compile' if compile_ else 'eager'}",
                         f"{ips:.0f} img/s"))
    rows.append((f"frozen-feature extraction, {size} px", f"{feature_ips(args.device, 256 if cpu else 4096, size):.0f} "
                                                           "img/s"))
    if not cpu:
        seconds, acc = auto_run(args.device)
        rows.append(("default `auto` on hymenoptera, cold cache, start to finish", f"{seconds:.1f} s, {acc:.1%}"))
        n = torch.cuda.device_count()
        if n > 1:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "ips"
                subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                                __file__, "--ddp-worker"], check=True, env={**os.environ, "GPU_BENCH_OUT": str(out)})
                rows.append((f"fine-tune, bf16 eager, {n} GPUs (DDP, batch {batch} per GPU)",
                             f"{float(out.read_text()):.0f} img/s ({float(out.read_text()) / float(rows[2][1].split()[0]):.2f}x "
                             "one GPU)"))
    name = torch.cuda.get_device_name() if not cpu else "CPU smoke test"
    text = "\n".join([f"# GPU throughput ({name})", "", f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
                      "Command: `python benchmarks/gpu.py`.", "", "| measure | result |", "| --- | --- |",
                      *[f"| {a} | {b} |" for a, b in rows], ""])
    print(text)
    if not cpu:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
