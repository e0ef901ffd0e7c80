"""Stages 2 and 5 of the time-budget issue, measured before either could become a default: a stronger head on
frozen features (Head2Toe-style pooled outputs of the last block stages concatenated with the final features,
an L2 strength swept) and a larger offline backbone (Lite2's final features).

    python benchmarks/head_ablation.py [--data flowers5,caltech101-25] [--views 0]

Features of the eval view (and `--views` augmented views of each training image) are extracted once per backbone;
each head is a multinomial logistic regression fitted full-batch with L-BFGS on standardised features (well under
10 s whatever the number of classes). Printed: validation accuracy per feature set and L2 strength, and the
extraction time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)
TAPPED = (3, 4, 5, 6)  # EfficientNet-Lite block stages whose pooled outputs join the final features


def features(data_dir: Path, backbone: str, views: int) -> dict:
    from tunevision.classify.features import extract
    from tunevision.classify.loops import repeat_rows
    from tunevision.classify.prepare import prepare_data
    from tunevision.classify.reader import feature_views
    from tunevision.core.config import RunConfig
    from tunevision.core.runtime import resolve_runtime
    from tunevision.core.ui import RunLog
    from tunevision.models.backbones import build_classifier, create_backbone
    cfg = RunConfig.from_options(str(data_dir), backbone=backbone, views=views, cache_dir="")
    bb = create_backbone(backbone, pretrained=True)
    data = prepare_data(cfg, bb, RunLog(quiet=True))
    model = build_classifier(bb, len(data.dataset.classes)).eval()
    taps: list[torch.Tensor] = []
    for i in TAPPED:
        model.body.blocks[i].register_forward_hook(lambda m, inp, out: taps.append(out.float().mean((2, 3))))

    def forward(x: torch.Tensor) -> torch.Tensor:
        taps.clear()
        last = model.forward_features(x).float()
        return torch.cat(taps + [last], 1)
    rt = resolve_runtime("cpu", "auto")
    start = time.perf_counter()
    eval_view, *augmented = feature_views(cfg.train, data, views)
    train = [extract(forward, data.train_images, v, rt) for v in [eval_view, *augmented]]
    out = {"train": torch.cat(train), "y": repeat_rows(data.train_labels, 1 + views),
           "val": extract(forward, data.val_images, eval_view, rt), "yval": data.val_labels,
           "last": bb.num_features, "seconds": time.perf_counter() - start}
    return out


def logistic(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, lam: float) -> float:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    classes = int(y.max()) + 1
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + lam * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return ((xv @ w + b).argmax(1) == yv).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="flowers5,caltech101-25")
    ap.add_argument("--views", type=int, default=0)
    args = ap.parse_args()
    for name in args.data.split(","):
        for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
            f = features(ROOT.parent / "shared" / "datasets" / name, backbone, args.views)
            print(f"{name} {backbone}: features in {f['seconds']:.0f} s")
            sets = {"final": slice(-f["last"], None)}
            if backbone == "efficientnet_lite0":
                sets["blocks 3-6 + final"] = slice(0, None)
            for label, cols in sets.items():
                accs = [logistic(f["train"][:, cols], f["y"], f["val"][:, cols], f["yval"], lam) for lam in LAMBDAS]
                print(f"  {label:<20s} " + "  ".join(f"L2 {lam:g}: {a:.1%}" for lam, a in zip(LAMBDAS, accs)),
                      flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
