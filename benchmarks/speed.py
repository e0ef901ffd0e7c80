"""Speed of tunevision vs the seed recipe (PyTorch transfer-learning tutorial), measured in one run.

    python benchmarks/speed.py [--data ../shared/datasets/hymenoptera] [--out benchmarks/results/speed.md]

Baseline: torchvision ImageFolder + transforms (RandomResizedCrop 224, flip, ToTensor, Normalize) +
DataLoader(num_workers=2) + fp32 eager EfficientNet-Lite0 + SGD(lr 1e-3, momentum 0.9) + StepLR, fine-tuning
the whole network for 5 epochs. Every ratio below compares numbers taken in this same process.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from tunevision.data import augment as aug
from tunevision.core.config import DataConfig, RunConfig, TrainConfig
from tunevision.data.sources import load_images
from tunevision.classify.features import extract_features
from tunevision.models.backbones import build_classifier, create_backbone
from tunevision.core.runtime import resolve_runtime
from tunevision.classify.loops import train_one_epoch
from tunevision.engine.optim import make_optimizer, make_scheduler
from tunevision.classify.prepare import prepare_data
from tunevision.classify.train import fit
from tunevision.core.ui import RunLog
from tunevision.data.discover import discover

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline_loaders(data: Path, batch: int = 32):
    from torchvision import datasets, transforms
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])
    rgb = lambda p: Image.open(p).convert("RGB")  # noqa: E731  (the tutorial's loader, GIF included)
    train = datasets.ImageFolder(data / "train", train_tf, loader=rgb)
    val = datasets.ImageFolder(data / "val", val_tf, loader=rgb)
    return (torch.utils.data.DataLoader(train, batch, shuffle=True, num_workers=2),
            torch.utils.data.DataLoader(val, batch, num_workers=2))


def baseline_finetune(data: Path, epochs: int = 5) -> dict:
    start = time.perf_counter()
    train_dl, val_dl = baseline_loaders(data)
    b = create_backbone("efficientnet_lite0")
    model = build_classifier(b, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    best, best_t, train_secs, n_train, curve = 0.0, 0.0, 0.0, 0, []
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for x, y in train_dl:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_train += len(y)
        train_secs += time.perf_counter() - t
        sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_dl:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        curve.append((time.perf_counter() - start, correct / total))
        if correct / total > best:
            best, best_t = correct / total, time.perf_counter() - start
    return {"best_acc": best, "time_to_best": best_t, "total": time.perf_counter() - start,
            "train_ips": n_train / train_secs, "curve": curve}


def accuracy_within(curve: list[tuple[float, float]], budget: float) -> str:
    """The baseline's best validation accuracy among the epochs it finished within `budget` seconds."""
    done = [acc for t, acc in curve if t <= budget]
    return f"{max(done):.1%}" if done else f"no epoch finished (first at {curve[0][0]:.0f} s)"


def tunevision_default(data: Path, cache: Path) -> dict:
    """`tunevision train DATA` with its defaults, cold cache, start to finish (the bundle's accuracy)."""
    start = time.perf_counter()
    result = fit(RunConfig(data=DataConfig(data=str(data), cache_dir=str(cache)), out=str(cache / "runs")),
                 log=RunLog(quiet=True))
    return {"acc": result.evaluation.accuracy, "total": time.perf_counter() - start}


def tunevision_finetune_ips(data: Path, cache: Path, epochs: int = 2) -> float:
    """Whole-network training images/s at 224 px, timed over the training loop only (as the baseline's is): the
    uint8 cache in memory, batch augmentation, channels_last, the runtime `fit` picks for training."""
    cfg = RunConfig(data=DataConfig(data=str(data), cache_dir=str(cache), image_size=224),
                    train=TrainConfig(mode="finetune", epochs=epochs))
    rt = resolve_runtime("auto", "auto", training=True)
    backbone = create_backbone("efficientnet_lite0")
    prepared = prepare_data(cfg, backbone, RunLog(quiet=True))
    model = build_classifier(backbone, len(prepared.dataset.classes)).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.train)
    sched = make_scheduler(opt, "onecycle", 100)
    pipeline = aug.make_pipeline(cfg.train.augment, 224)
    gen = torch.Generator().manual_seed(0)
    seconds = 0.0
    for epoch in range(epochs):
        t = time.perf_counter()
        train_one_epoch(model, prepared.train_images, prepared.train_labels, pipeline, opt, sched, rt, cfg, gen,
                        lambda n: None)
        if epoch:  # the first epoch includes one-off warm-up (allocator, oneDNN kernels); the baseline's 5 dilute it
            seconds += time.perf_counter() - t
    return len(prepared.train) * (epochs - 1) / seconds


def pipeline_ips(data: Path, epochs: int = 2) -> tuple[float, float]:
    """Images/s of decode + augment, no model: baseline DataLoader vs tunevision (decode once, batch augment)."""
    train_dl, _ = baseline_loaders(data)
    n = len(train_dl.dataset)
    t = time.perf_counter()
    for _ in range(epochs):
        for _x, _y in train_dl:
            pass
    base = n * epochs / (time.perf_counter() - t)
    ds = discover(str(data))
    t = time.perf_counter()
    images, _ = load_images(ds.train, 256, cache_dir=None)  # cold decode, once
    pipe = aug.make_pipeline("default", 224)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for start in range(0, len(images), 32):
            pipe(torch.from_numpy(images[start:start + 32]), g)
    return base, len(images) * epochs / (time.perf_counter() - t)


def make_large_jpegs(src: Path, dst: Path, n: int = 48) -> Path:
    """Phone-sized copies (4000x3000) of real photos, in train/ and val/ class folders."""
    files = sorted((src / "train").rglob("*.jpg"))[:n]
    for i, f in enumerate(files):
        split = "train" if i < n * 3 // 4 else "val"
        out = dst / split / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").resize((4000, 3000), Image.BILINEAR).save(out, quality=90)
    return dst


def inference_ips(batch: int = 32, reps: int = 3) -> tuple[float, float, float]:
    """(eager fp32, the runtime's own fast path: bf16 channels_last where the CPU has bf16, ONNX Runtime fp32)."""
    from floor import forward_rates  # benchmarks/ is this script's folder, so on sys.path
    rates = forward_rates(224, batch, reps, eager=True)
    best = rates.get("torch bf16 channels_last", rates["torch fp32 channels_last"])
    return rates["torch fp32 eager"], best, rates.get("ONNX Runtime fp32", 0.0)


def feature_rates(data: Path) -> tuple[float, float]:
    ds = discover(str(data))
    images, _ = load_images(ds.train, 256, cache_dir=None)
    b = create_backbone("efficientnet_lite0")
    model = build_classifier(b, 2).to(memory_format=torch.channels_last)
    rt = resolve_runtime("cpu")
    t = time.perf_counter()
    feats = extract_features(model, images, lambda u, i: aug.eval_view(u, 224), rt)
    ips = len(images) / (time.perf_counter() - t)
    y = torch.tensor([s.label for s in ds.train])
    head = torch.nn.Linear(feats.shape[1], 2)
    opt = torch.optim.AdamW(head.parameters(), 3e-3)
    t = time.perf_counter()
    for _ in range(40):
        for idx in torch.randperm(len(y)).split(256):
            loss = F.cross_entropy(head(feats[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ips, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hymenoptera"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.md"))
    args = ap.parse_args()
    data = Path(args.data)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("1/5 time to accuracy ...", flush=True)
        tv = tunevision_default(data, tmp / "cache1")
        base = baseline_finetune(data)
        reached = "reached 95 %" if tv["acc"] >= 0.95 else "BELOW 95 %"
        rows.append(("1a. seconds to >= 95 % val accuracy (tunevision) vs to the baseline's best, hymenoptera",
                     f"{base['time_to_best']:.1f} (best {base['best_acc']:.1%}; 5 epochs {base['total']:.0f} s)",
                     f"{tv['total']:.1f} ({tv['acc']:.1%}, {reached}; defaults, cold cache, start to finish)",
                     base["time_to_best"] / tv["total"]))
        rows.append(("1b. accuracy within tunevision's wall-clock budget", accuracy_within(base["curve"], tv["total"]),
                     f"{tv['acc']:.1%} in {tv['total']:.1f} s", float("nan")))
        print("2/5 fine-tune images/s ...", flush=True)
        ft = tunevision_finetune_ips(data, tmp / "cache2")
        rows.append(("2. fine-tune training images/s at 224 px", f"{base['train_ips']:.1f}",
                     f"{ft:.1f} (training loop only, like the baseline)", ft / base["train_ips"]))
        print("3/5 data pipeline images/s ...", flush=True)
        b_small, t_small = pipeline_ips(data)
        rows.append(("3a. decode + augment images/s, hymenoptera (2 epochs)", f"{b_small:.0f}", f"{t_small:.0f}",
                     t_small / b_small))
        large = make_large_jpegs(data, tmp / "large")
        b_large, t_large = pipeline_ips(large)
        rows.append(("3b. decode + augment images/s, 4000x3000 JPEGs (2 epochs)", f"{b_large:.1f}",
                     f"{t_large:.1f}", t_large / b_large))
        print("4/5 inference images/s ...", flush=True)
        eager, best, onnx = inference_ips()
        rows.append(("4. inference images/s, batch 32 at 224 px: best CPU path (`predict --runtime onnx`)",
                     f"{eager:.0f} (eager fp32)", f"ONNX Runtime fp32 {onnx:.0f}" if onnx else "ONNX row missing",
                     onnx / eager))
        rows.append(("4b. ... PyTorch bf16 autocast + channels_last (`predict --precision bf16`)",
                     f"{eager:.0f} (eager fp32)", f"{best:.0f}", best / eager))
        print("5/5 frozen features ...", flush=True)
        ips, head_s = feature_rates(data)
        rows.append(("5. frozen-feature extraction images/s; head training (40 epochs)", f"{eager:.0f} (eager)",
                     f"{ips:.0f}; head {head_s:.2f} s", ips / eager))
    lines = ["# Speed: tunevision vs the seed recipe, measured in one run", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Command: `python benchmarks/speed.py`.", "",
             "| measure | baseline | tunevision | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {b} | {t} | {'' if r != r else f'{r:.2f}x'} |" for name, b, t, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print("6/6 int8 (benchmarks/int8.py) ...", flush=True)
    from benchmarks.int8 import replace_section, section
    replace_section(Path(args.out), section())


if __name__ == "__main__":
    main()
