"""Several processes, one run: PyTorch's own DistributedDataParallel under `torchrun`, behind a thin `Dist` object.

`torchrun --nproc_per_node N -m tunevision train DATA ...` (or `tunevision train DATA --nproc N`) starts N
processes; torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) tells each which it is.
The rules that keep a distributed run equal to a single-process one:
  * `--batch-size` is the global batch: every step, each rank takes its 1/N share of the same global batch
    (drawn from one seeded order that does not depend on N), and DDP averages the gradients. So the learning
    rate needs no rescaling: the same config gives the same optimisation for any N (BatchNorm statistics are
    per rank unless --sync-bn; augmentation draws come from each rank's own stream).
  * rank 0 alone writes the run folder, logs, checkpoints, report and bundle; the others write nothing.
  * feature extraction (auto/freeze) and image decoding are sharded, then gathered.
A rank that dies ends the others through torchrun's elastic agent; a collective waits at most `timeout_s`.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch: contiguous, sizes differing by at most one."""
        return items.tensor_split(self.world)[self.rank] if self.enabled else items

    def spans(self, n: int, unit: int = 1) -> list[tuple[int, int]]:
        """Every rank's [lo, hi) of n items, contiguous and in rank order, split in whole units of `unit` items
        (as `shard` splits a batch when unit is 1)."""
        chunks = torch.arange(math.ceil(n / unit)).tensor_split(self.world)
        return [(int(c[0]) * unit, min(n, (int(c[-1]) + 1) * unit)) if len(c) else (n, n) for c in chunks]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_rows(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Concatenate each rank's rows in rank order (rank r holds sizes[r] rows); every rank gets the whole."""
        if not self.enabled:
            return local
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype)
        padded[:len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    def mean(self, values: tuple[float, ...]) -> tuple[float, ...]:
        """The mean over ranks of a few numbers (each rank's epoch loss and accuracy, on equal shares)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return tuple((t / self.world).tolist())

    def broadcast(self, obj):
        """rank 0's Python object (a path, a config, a state dict) on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_from_env(device: str = "cpu", timeout_s: float = 600.0) -> Dist:
    """The process group torchrun describes in the environment, or a single-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
