"""Multi-GPU and multi-node training through torch.distributed (launched by torchrun).

    torchrun --nproc_per_node 4 -m drmm train --dataset mnist --device cuda --out runs/x

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` joins the process group (NCCL on CUDA,
gloo on CPU). Every rank draws the same epoch order from the same seeded generator and takes
its own contiguous shard of each part of the global batch, so the global batch keeps its
make-up of labeled and unlabeled images (Appendix A: half and half) and
DistributedDataParallel's gradient average equals the single-process gradient of the same
global batch, except for BatchNorm: each rank normalises its shard with its own statistics
unless SyncBatchNorm is asked for (CUDA only). Rank 0 alone writes checkpoints, logs and metrics,
and computes the graph prior's pseudo-labels (minutes of CPU work), which it broadcasts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from drmm.errors import DRMMError

GROUP_TIMEOUT_MIN = 60  # minutes a collective may wait for the slowest rank before the run fails


@dataclass
class Dist:
    rank: int = 0  # this process's global rank
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this node: picks the GPU
    device: torch.device = torch.device("cpu")  # this rank's device

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of one part of the batch's indices (n,) -> (n/world,)."""
        n = len(indices) // self.world
        return indices[self.rank * n:(self.rank + 1) * n]


def setup(device: str, batch_split: tuple[int, int]) -> Dist:
    """Join the process group if launched by torchrun; otherwise a single process.
    batch_split: the global batch's (labeled, unlabeled) images per step."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if any(n % world for n in batch_split):
        raise DRMMError(f"the batch's {batch_split[0]} labeled and {batch_split[1]} unlabeled"
                        f" images must each be divisible by the {world} processes, so that every"
                        " rank gets the same share; change --batch-size or --labeled-batch")
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev, backend = torch.device(device), "gloo"
    if not dist.is_initialized():
        # an hour, not NCCL's 10 minutes: the other ranks wait in a broadcast while rank 0 alone
        # computes the graph prior (125 s for MNIST on 2 cores; more for larger training sets)
        dist.init_process_group(backend, timeout=timedelta(minutes=GROUP_TIMEOUT_MIN))
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_from_main(d: Dist, tensors: tuple[torch.Tensor, ...]) -> None:
    """Overwrite every rank's tensors, in place, with rank 0's (each of the same shape on all)."""
    if d.enabled:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
