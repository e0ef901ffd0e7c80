"""Where a frozen network's forward passes run, chosen by measurement on this machine.

The fastest path moves from one machine to the next: on one 2-core CPU ONNX Runtime fp32 ran Lite0 at 281 images/s
and torch bf16 at 344; on another, ONNX Runtime ran 134-164 and torch bf16 50-111, best at 8 images a batch and worst
at 64, and torch fp32 fell from 67 to 17 images/s between batches of 4 and 64. So a feature pass times each candidate
(path and batch size) on its own first batches (`PathChooser`) and keeps the answer per machine, backbone and size in
the cache folder: the next run reads it instead of timing again. `choose` times candidates on a sample instead, for
work that one path must do whole (scoring a dataset)."""
from __future__ import annotations

import importlib
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from tunevision.core.atomic import atomic_write
from tunevision.core.runtime import Runtime
from tunevision.engine.export import onnx_session

Forward = Callable[[torch.Tensor], torch.Tensor]
# Below this many images a set keeps its default path: timing the candidates (and exporting to ONNX) costs 2-3 s,
# more than it saves on a few dozen images
TIMED_FROM = 200


@dataclass(frozen=True)
class ForwardPath:
    name: str          # "onnxruntime fp32", "torch bf16", "torch fp32"
    batch: int         # images a batch: the batch size it measured fastest at
    exact: bool        # fp32 throughout: agrees with the exported model to ~1e-5
    forward: Forward
    runtime: Runtime   # what `extract` autocasts under (fp32 for ONNX Runtime: a no-op)

    @property
    def label(self) -> str:
        return f"{self.name} x{self.batch}"


class _Features(torch.nn.Module):
    """The export's graph: a method of the network (its pooled features), as a module's forward; the network is a
    submodule so that its weights go in as initialisers, not as constants the tracer refuses. Its input is NHWC: the
    views are channels_last, so they reach ONNX Runtime without the copy into NCHW (0.25 ms an image), and ONNX
    Runtime reorders NHWC into its blocked layout as cheaply as NCHW (Lite0: 139 against 133 images/s, the same
    features to the bit)."""

    def __init__(self, module: torch.nn.Module, fn: Forward):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.permute(0, 3, 1, 2))


def onnx_forward(module: torch.nn.Module, fn: Forward, size: int, path: Path, log=None) -> Forward | None:
    """fn (a method of `module`) exported to ONNX once (at `path`, reused while it exists; NHWC input, see
    `_Features`) and run by ONNX Runtime on the CPU with torch's thread count, as a function of NCHW tensors; None,
    with the reason in the log, where onnxruntime is not installed or the export fails (torch paths still work)."""
    try:
        importlib.import_module("onnxruntime")  # the session itself is made by engine/export.py
    except ImportError:
        return None
    try:
        if not path.is_file():
            module.eval()  # a graph traced in training mode keeps dropout and batch statistics: features 5x off
            # the TorchScript exporter: 1.2-1.5 s for Lite0 against 13.5 s for the dynamo one
            atomic_write(path, lambda tmp: torch.onnx.export(
                _Features(module, fn).eval(), (torch.zeros(1, size, size, 3),), str(tmp), input_names=["input"],
                output_names=["features"], dynamic_axes={"input": {0: "n"}}, opset_version=17, dynamo=False))
        session = onnx_session(path, torch.get_num_threads())  # torchrun and the user's thread settings hold
    except Exception as e:  # an operator the exporter lacks, a full disk, a damaged file: rebuilt next time
        path.unlink(missing_ok=True)
        if log:
            log.info(f"[yellow]ONNX Runtime path skipped ({type(e).__name__}: {str(e).splitlines()[0][:100]})[/]")
        return None
    return lambda x: torch.from_numpy(session.run(None, {"input": x.float().permute(0, 2, 3, 1).contiguous().numpy()
                                                      })[0])


def candidates(fn: Forward, rt: Runtime, onnx: Callable[[], Forward | None]) -> list[ForwardPath]:
    """The paths worth timing here. GPUs: torch in the run's precision. CPUs: ONNX Runtime fp32 (exact) and torch
    bf16 where the CPU has it, each at 8 and 16 images a batch (the fastest or near it in a sweep of 4 to 64 on a
    2-core EPYC; 64 was the slowest); torch fp32 only without ONNX Runtime, which beat it 2-5x at every batch size on
    every machine measured."""
    exact = replace(rt, bf16=False)
    if rt.device.type != "cpu":
        return [ForwardPath(f"torch {'bf16' if rt.bf16 else 'fp32'}", 64, not rt.bf16, fn, rt)]
    paths = [ForwardPath("torch bf16", b, False, fn, rt) for b in (8, 16)] if rt.bf16 else []
    ort_fn = onnx()
    if ort_fn is not None:
        paths += [ForwardPath("onnxruntime fp32", b, True, ort_fn, exact) for b in (8, 16)]
    else:
        paths += [ForwardPath("torch fp32", b, True, fn, exact) for b in (8, 16)]
    return paths


def images_per_second(path: ForwardPath, sample: torch.Tensor, warmup: int = 1) -> float:
    """Images/s of `path` over `sample` (cut into its batches), after `warmup` batches: ONNX Runtime's first two
    runs are 2-4x slower than the rest while it sizes its memory."""
    x = sample.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), path.runtime.autocast():
        for _ in range(warmup + path.name.lower().startswith("onnx")):
            path.forward(x[:path.batch])
        start = time.perf_counter()
        for i in range(0, len(x), path.batch):
            path.forward(x[i:i + path.batch])
    return len(x) / max(time.perf_counter() - start, 1e-9)


# What the timed code was: rates timed before ONNX Runtime took NHWC input and before malloc kept freed blocks
# (core/allocator.py: torch bf16 16 a batch ran 122 images/s then, 162 now) are timed again, not believed
RATES_VERSION = "nhwc, kept heap"


def machine_key(backbone: str, size: int, rt: Runtime) -> str:
    """What the fastest path depends on: the processor, threads, library versions, the network and input size."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    return "|".join([cpu, str(os.cpu_count()), str(torch.get_num_threads()), rt.device.type, str(rt.bf16),
                     torch.__version__, ort_version, backbone, str(size), RATES_VERSION])


def choose(paths: list[ForwardPath], sample: torch.Tensor) -> tuple[ForwardPath, dict[str, float]]:
    """(fastest path, images/s of each) of these candidates, each timed on `sample`: for work that one path must do
    whole (scoring a dataset); a feature pass chooses while it works (`PathChooser`)."""
    rates = {p.label: images_per_second(p, sample) for p in paths}
    return max(paths, key=lambda p: rates[p.label]), rates


MIN_TIMED = 32  # images a candidate is timed on before the choice trusts its rate
WARMUP = 2      # untimed forward calls of each candidate: ONNX Runtime's first two runs are 2-4x slower
# An inexact (bf16) path takes training features only when it beats the fastest exact one by this much: bf16
# training features beside fp32 validation features cost flowers5 0.35-0.6 points (75.81-76.04 % in four runs,
# 76.39 % in every fp32 one; hymenoptera 96.08 % either way). The rates come from a few dozen images on the pass's
# first batches, which on a shared 2-core EPYC move by a fifth or more: with a margin of 1.15, a run whose
# 512-image sweep put bf16 at 1.07x ONNX Runtime still took bf16 from its own first batches, kept that in the
# machine's memo, and both later runs there scored 75.81 %. Half again as fast is a machine where bf16 pays
INEXACT_MARGIN = 1.5


@dataclass
class _Timing:
    calls: int = 0
    images: int = 0
    seconds: float = 0.0


class PathChooser:
    """The forward path of each batch of a feature pass, chosen while the work is done. Until every candidate has
    timed MIN_TIMED images (after WARMUP untimed calls), batches go round the candidates not yet timed; then each
    batch goes to the fastest allowed (an exact one where `exact` is asked; an inexact one only when INEXACT_MARGIN
    faster). Every batch's features are kept, so the choice costs no forward pass of its own: timing four
    candidates on a sample of their own cost 1.5-2 s, a fifth of hymenoptera's feature passes. Rates the memo holds
    for this machine key are believed and nothing is timed; rates measured here are added to it once every
    candidate has one."""

    def __init__(self, paths: list[ForwardPath], memo: Path | None = None, key: str = "", log=None,
                 known: dict[str, float] | None = None) -> None:
        self.paths, self.memo, self.key, self.log = list(paths), memo, key, log
        book = _read(memo).get(key) if memo else None
        self.known = dict(known or {})
        if isinstance(book, dict):
            self.known.update({p.label: float(book[p.label]) for p in paths
                               if isinstance(book.get(p.label), (int, float))})
        if not any(p.exact for p in self.paths):  # a GPU's run precision: its exact twin, never chosen for speed
            fastest = self.paths[0]
            twin = replace(fastest, name="torch fp32", exact=True, runtime=replace(fastest.runtime, bf16=False))
            self.paths.append(twin)
            self.known.setdefault(twin.label, 0.0)
        self.timing = {p.label: _Timing() for p in self.paths}
        self.settled = all(p.label in self.known for p in self.paths)

    def rate(self, path: ForwardPath) -> float | None:
        """Images/s: the memo's, or measured here once MIN_TIMED images were timed; None before."""
        if path.label in self.known:
            return self.known[path.label]
        t = self.timing[path.label]
        return t.images / t.seconds if t.images >= MIN_TIMED and t.seconds > 0 else None

    def pick(self, exact: bool) -> ForwardPath:
        allowed = [p for p in self.paths if p.exact or not exact]
        untimed = [p for p in allowed if self.rate(p) is None]
        return untimed[0] if untimed else max(allowed, key=lambda p: self.rate(p) / (1 if p.exact else INEXACT_MARGIN))

    def timed(self, path: ForwardPath) -> Forward:
        """path.forward, each call after the warm-up timed into this chooser (until the path has a rate)."""
        t = self.timing[path.label]

        def forward(x: torch.Tensor) -> torch.Tensor:
            t.calls += 1
            if t.calls <= WARMUP or self.rate(path) is not None:
                return path.forward(x)
            start = time.perf_counter()
            y = path.forward(x)
            t.seconds += time.perf_counter() - start
            t.images += len(x)
            return y
        return forward

    def settle(self) -> None:
        """Once every candidate has a rate: a line in the log and the rates in the memo (the next run times nothing)."""
        rates = {p.label: self.rate(p) for p in self.paths}
        if self.settled or any(r is None for r in rates.values()):
            return
        self.settled = True
        if self.log:
            self.log.info("forward paths, images/s timed on the first batches: " +
                          ", ".join(f"{k} {v:.0f}" for k, v in rates.items() if v) +
                          f"; training features on {self.pick(False).label}, validation on {self.pick(True).label}")
        if self.memo is not None:
            book = _read(self.memo)
            book[self.key] = {k: v for k, v in rates.items() if v}  # not a GPU's untimed exact twin
            try:
                self.memo.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.memo, lambda tmp: tmp.write_text(json.dumps(book, indent=1)))
            except Exception:  # a read-only cache: timed again next run, nothing lost
                pass


def _read(memo: Path | None) -> dict:
    try:
        book = json.loads(memo.read_text()) if memo else {}
    except (OSError, ValueError):
        return {}
    return book if isinstance(book, dict) else {}  # a file edited by hand or by another program: timed again
