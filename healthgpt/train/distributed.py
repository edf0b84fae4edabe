"""The few facts about the process group the loop needs, read from torchrun's environment.

Standalone (no torchrun) is world size 1 with no process group, so the same loop runs under
`python -m healthgpt.train.entry`, `torchrun --nproc_per_node=N` and a cluster launcher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def setup(device: str | None = None) -> Dist:
    """Join the torchrun process group if there is one (NCCL on GPUs, gloo on CPUs)."""
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, local_rank, world, target)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: list[float], d: Dist) -> list[float]:
    if not d.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def sum_array(array: np.ndarray, d: Dist) -> np.ndarray:
    """Elementwise sum of an int64 array over ranks (one all-reduce; NCCL needs it on GPU)."""
    if not d.enabled:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(d.device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
