"""Device and numeric settings, decided once per process by measurement-backed rules, passed explicitly."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from tunevision.core.errors import TunevisionError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool  # autocast to bfloat16: AMX/AVX512-BF16 CPUs and recent GPUs run it 1.3-2.3x faster

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# Inference defaults to fp32: bf16 is ~2x faster on this CPU but flipped 1 of 83 hymenoptera predictions
# against the exported fp32 ONNX model; exact agreement with exports matters more by default
# (ONNX Runtime is the fast path: 2.4-3.2x eager fp32 across runs). Training and frozen-feature
# extraction use "auto".
INFERENCE_PRECISION = "fp32"


def resolve_runtime(device: str = "auto", precision: str = "auto", *, training: bool = False) -> Runtime:
    """device: auto|cpu|cuda[:N]|mps; precision: auto|bf16|fp32.

    auto = bf16 where it measured faster: on GPUs always; on AMX/AVX512-BF16 CPUs for inference only
    (Lite0 on a 2-core Xeon: inference 166 vs 83 img/s, but training 18 vs 23 img/s at 224 px)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TunevisionError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TunevisionError(f"--device {device}: this machine has no CUDA GPU usable by PyTorch; use --device cpu "
                              "(or auto)")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise TunevisionError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise TunevisionError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise TunevisionError(f"--device {device}: unsupported; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        # DDP under torchrun: each process drives the GPU named by LOCAL_RANK.
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dev.index or 0)))
    if precision == "auto":
        bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            dev.type == "cpu" and not training and cpu_has_bf16())
    else:
        bf16 = precision == "bf16"
    return Runtime(dev, bf16)


def compiled_for_training(model: torch.nn.Module, example: torch.Tensor, log) -> torch.nn.Module:
    """`torch.compile(model)`, checked by one forward/backward on `example` (compilation is lazy: a failure
    would otherwise surface mid-epoch); on any failure the eager model, with a one-line reason. The check's
    BatchNorm statistics and gradients are rolled back so it leaves no trace in training."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        compiled = torch.compile(model, dynamic=False)  # static shapes: one compile per batch shape, fastest kernels
        compiled.train()
        compiled(example).float().sum().backward()
        return compiled
    except Exception as e:  # inductor needs a C++ compiler and a supported platform; eager always works
        log.info(f"[yellow]torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                 "training eagerly[/]")
        return model
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.zero_grad(set_to_none=True)


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
