"""Batch augmentation as pure tensor functions (airbench style), composed from a spec string.

Images arrive as the uint8 cache squares (N, S, S, 3); a pipeline returns float (N, 3, size, size) in
[0, 1]. Randomness comes only from the generator passed in, and only at training time: evaluation is
`eval_view`, a deterministic centre crop of the cached square (= resize shorter side, centre crop).

Spec grammar: comma-separated ops, each `name` or `name(key=value,...)`, ranges as `lo-hi`, e.g.
    "rrc(scale=0.1-1,ratio=0.5-2),hflip,jitter(b=0.5,c=0.5,s=0.5,h=0.1)"
"""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F

from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry

Op = Callable[..., torch.Tensor]  # op(x_nchw, generator, size, **params) -> x (uint8 for ON_UINT8 ops, else float)
OPS: Registry[Op] = Registry("augmentation")

PRESETS = {
    "none": "center",
    "light": "rrc(scale=0.35-1),hflip",
    "default": "rrc(scale=0.25-1),hflip",
    "strong": "rrc(scale=0.08-1),hflip,jitter(b=0.4,c=0.4,s=0.4,h=0.1),erase(p=0.25)",
}
GEOMETRY = ("rrc", "center")  # ops that produce the output size from the cached square
ON_UINT8 = ("rrc", "center", "hflip", "vflip")  # ops exact on uint8 pixels (resampling, mirroring)


def to_float_nchw(batch_u8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1], memory left channels_last (no copy of layout)."""
    return batch_u8.permute(0, 3, 1, 2).float().div_(255)


def eval_view(batch_u8: torch.Tensor, size: int) -> torch.Tensor:
    s = batch_u8.shape[1]
    top = (s - size) // 2
    return to_float_nchw(batch_u8[:, top:top + size, top:top + size])


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


@OPS.register("center")
def center(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    top = (x.shape[-1] - size) // 2
    return x[..., top:top + size, top:top + size] if top >= 0 else F.interpolate(x, size=(size, size),
                                                                                 mode="bilinear", antialias=True)


@OPS.register("rrc")
def random_resized_crop(x: torch.Tensor, g: torch.Generator, size: int, scale: tuple = (0.08, 1.0),
                        ratio: tuple = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop, as torchvision's: a pixel box per image (area fraction in `scale`, aspect in `ratio`,
    clipped to the square) resized bilinearly with antialiasing to `size`. On the uint8 squares (the pipeline keeps
    them uint8 until an op needs floats) one interpolate per box took 0.6 ms an image, against 2.4 ms for a
    whole-batch float grid_sample that first had to turn every full square into floats."""
    _check_range("scale", scale, 0, 1)
    _check_range("ratio", ratio, 0, math.inf)
    n, side_h, side_w = x.shape[0], x.shape[-2], x.shape[-1]
    area = _uniform(g, n, *scale)
    log_r = _uniform(g, n, math.log(ratio[0]), math.log(ratio[1]))
    w = (torch.sqrt(area * torch.exp(log_r)) * side_w).round().clamp(1, side_w).long()
    h = (torch.sqrt(area / torch.exp(log_r)) * side_h).round().clamp(1, side_h).long()
    left = (torch.rand(n, generator=g) * (side_w - w + 1)).long().clamp(max=side_w - w)
    top = (torch.rand(n, generator=g) * (side_h - h + 1)).long().clamp(max=side_h - h)
    # made channels_last, not converted to it: the conversion of a fresh (N, C, size, size) tensor allocated and
    # copied it twice, 0.08-0.3 ms an image of page faults and copies
    out = torch.empty(n, x.shape[1], size, size, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    for i, (t, le, hh, ww) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist())):
        out[i:i + 1] = F.interpolate(x[i:i + 1, :, t:t + hh, le:le + ww], size=(size, size), mode="bilinear",
                                     antialias=True, align_corners=False)
    return out


def _check_range(name: str, value: tuple, low: float, high: float) -> None:
    if not (isinstance(value, tuple) and low < value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be a range lo-hi with {low} < lo <= hi <= {high}, got {value!r}")


def _check_p(p: float) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")


def _flip_some(x: torch.Tensor, hit: torch.Tensor, dim: int) -> torch.Tensor:
    """A copy of x with the images where `hit` is true flipped along `dim`: only those are flipped (flipping the
    whole batch and choosing per image, as torch.where does, took 0.155 ms an image against 0.088)."""
    out = x.clone()
    hit = hit.to(x.device)
    out[hit] = x[hit].flip(dim)
    return out


@OPS.register("hflip")
def hflip(x: torch.Tensor, g: torch.Generator, size: int, p: float = 0.5) -> torch.Tensor:
    _check_p(p)
    return _flip_some(x, torch.rand(x.shape[0], generator=g) < p, 3)


@OPS.register("vflip")
def vflip(x: torch.Tensor, g: torch.Generator, size: int, p: float = 0.5) -> torch.Tensor:
    _check_p(p)
    return _flip_some(x, torch.rand(x.shape[0], generator=g) < p, 2)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


@OPS.register("jitter")
def color_jitter(x: torch.Tensor, g: torch.Generator, size: int, b: float = 0.0, c: float = 0.0,
                 s: float = 0.0, h: float = 0.0) -> torch.Tensor:
    """ColorJitter per image: brightness/contrast/saturation factors in [1-v, 1+v], hue shift in [-h, h] turns."""
    if min(b, c, s, h) < 0 or h > 0.5:
        raise ValueError(f"b, c, s must be >= 0 and h in [0, 0.5], got b={b}, c={c}, s={s}, h={h}")
    n = x.shape[0]

    def factor(v: float) -> torch.Tensor:
        return _uniform(g, n, max(0.0, 1 - v), 1 + v).view(-1, 1, 1, 1).to(x.device, x.dtype)

    if b:
        x = x * factor(b)
    if c:
        x = (x - _gray(x).mean((2, 3), keepdim=True)) * factor(c) + _gray(x).mean((2, 3), keepdim=True)
    if s:
        x = (x - _gray(x)) * factor(s) + _gray(x)
    if h:
        # Hue rotation about the grey axis in YIQ space: a linear map, so the whole batch is one matmul.
        angle = _uniform(g, n, -h, h) * 2 * math.pi
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(n, 3, 3)
        rot[:, 0, 0], rot[:, 1, 1], rot[:, 2, 2] = 1, cos, cos
        rot[:, 1, 2], rot[:, 2, 1] = -sin, sin
        m = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(x.device, x.dtype)
        x = torch.einsum("nij,njhw->nihw", m, x)
    return x.clamp_(0, 1)


@OPS.register("erase")
def random_erase(x: torch.Tensor, g: torch.Generator, size: int, p: float = 0.25,
                 scale: tuple = (0.02, 0.33)) -> torch.Tensor:
    """RandomErasing: a random rectangle per chosen image filled with noise."""
    _check_p(p)
    _check_range("scale", scale, 0, 1)
    n, _, hh, ww = x.shape
    hit = torch.rand(n, generator=g) < p
    area = _uniform(g, n, *scale)
    side_h = (area.sqrt() * hh).long().clamp(1, hh)
    side_w = (area.sqrt() * ww).long().clamp(1, ww)
    top = (torch.rand(n, generator=g) * (hh - side_h + 1)).long()
    left = (torch.rand(n, generator=g) * (ww - side_w + 1)).long()
    x = x.clone()
    for i in torch.nonzero(hit).flatten().tolist():
        t, l, a, b = top[i], left[i], side_h[i], side_w[i]
        x[i, :, t:t + a, l:l + b] = torch.rand(3, int(a), int(b), generator=g).to(x.device, x.dtype)
    return x


def _torchvision_op(name: str, make: Callable[..., Callable]) -> None:
    """Per-image torchvision.transforms.v2 policies (RandAugment & co.), applied on uint8 as they expect."""
    @OPS.register(name)
    def op(x: torch.Tensor, g: torch.Generator, size: int, **kw) -> torch.Tensor:
        from torchvision.transforms import (
            v2,  # imported on first use, not when tunevision is imported
        )
        t = make(v2, **kw)
        u8 = (x * 255).round_().to(torch.uint8)
        return torch.stack([t(img) for img in u8]).float().div_(255)


for _name, _make in {
    "randaugment": lambda v2, n=2, m=9: v2.RandAugment(num_ops=int(n), magnitude=int(m)),
    "trivialaugment": lambda v2: v2.TrivialAugmentWide(),
    "autoaugment": lambda v2: v2.AutoAugment(),
    "rotate": lambda v2, degrees=15: v2.RandomRotation(float(degrees)),
    "affine": lambda v2, degrees=10, translate=0.1, scale=(0.9, 1.1):
        v2.RandomAffine(float(degrees), (float(translate),) * 2, tuple(scale)),
}.items():
    _torchvision_op(_name, _make)


def _value(text: str) -> float | tuple[float, float]:
    m = re.fullmatch(r"\s*([-+]?[\d.]+(?:e-?\d+)?)\s*(?:-\s*([\d.]+(?:e-?\d+)?))?\s*", text)
    if not m:
        raise TunevisionError(f"augmentation value {text!r}: expected a number or a range lo-hi")
    return (float(m[1]), float(m[2])) if m[2] else float(m[1])


def parse(spec: str) -> list[tuple[str, dict]]:
    """'rrc(scale=0.1-1),hflip' -> [('rrc', {'scale': (0.1, 1.0)}), ('hflip', {})]; presets expand."""
    spec = PRESETS.get(spec.strip(), spec)
    ops = []
    for m in re.finditer(r"\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*(?:,|$)", spec):
        if not m[0].strip():
            continue
        name, args = m[1], m[2] or ""
        if name not in OPS:
            raise TunevisionError(f"unknown augmentation {name!r} in {spec!r}; "
                                  f"ops: {', '.join(OPS)}; presets: {', '.join(PRESETS)}")
        params = {}
        for kv in filter(None, (a.strip() for a in args.split(","))):
            key, eq, val = kv.partition("=")
            if not eq:
                raise TunevisionError(f"augmentation {name}({args}): expected key=value, got {kv!r}")
            params[key.strip()] = _value(val)
        ops.append((name, params))
    consumed = "".join(m[0] for m in re.finditer(r"\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*(?:,|$)", spec))
    if consumed.replace(" ", "") != spec.replace(" ", ""):
        raise TunevisionError(f"cannot parse augmentation spec {spec!r}; example: 'rrc(scale=0.25-1),hflip'")
    if not any(name in GEOMETRY for name, _ in ops):
        ops.insert(0, ("center", {}))  # every pipeline must produce the training size
    return ops


def make_pipeline(spec: str, size: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Compile a spec once; the returned function maps uint8 (N,S,S,3) squares to float training batches."""
    ops = parse(spec)
    for name, params in ops:
        try:  # fail at start-up on a bad parameter, not in the middle of an epoch
            OPS.get(name)(torch.zeros(1, 3, size + 8, size + 8), torch.Generator().manual_seed(0), size=size, **params)
        except (TypeError, ValueError) as e:
            raise TunevisionError(f"augmentation {name}: {e}") from None

    def apply(batch_u8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # the leading geometric ops run on the uint8 squares: a quarter of the bytes, and floats only at the
        # output size (turning every full square into floats first was a third of the augmentation's time)
        x = batch_u8.permute(0, 3, 1, 2)
        for name, params in ops:
            if name not in ON_UINT8 and x.dtype == torch.uint8:
                x = x.float().div_(255)
            x = OPS.get(name)(x, g, size=size, **params)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        return x.contiguous(memory_format=torch.channels_last)
    return apply


def _beta(g: torch.Generator, alpha: float) -> float:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return float(__import__("numpy").random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each image and its (soft) target with another of the batch: lam ~ Beta(alpha, alpha)."""
    lam = _beta(g, alpha)
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box from another image of the batch; targets mix by the box's exact share of the area."""
    lam = _beta(g, alpha)
    n, _, h, w = x.shape
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    perm = torch.randperm(n, generator=g).to(x.device)
    x = x.clone()
    x[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    return x, kept * y + (1 - kept) * y[perm]


def mix_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets from mixup or cutmix (when both are on, each batch picks one at random, as timm does). `labels`:
    class indices, or already 0/1 multi-label targets, which mix the same way (a blend of two images carries each
    label in proportion, the soft target binary cross-entropy takes)."""
    y = labels.float() if labels.dim() == 2 else F.one_hot(labels, num_classes).float()
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(1, generator=g) < 0.5))
    return cutmix(x, y, cutmix_alpha, g) if use_cutmix else mixup(x, y, mixup_alpha, g)
