"""Past one machine: ``torchrun --nproc-per-node N -m restore solve|bench ...`` (and ``--nnodes`` for several nodes).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each rank then takes a balanced share of the work list (every
WORLD_SIZE-th item from its rank, as ``--shard RANK/WORLD_SIZE``), runs on ``cuda:LOCAL_RANK`` where GPUs exist
(CPU threads split between the ranks of a node otherwise), and writes the same resumable per-image outputs as a
single process. Results equal a single-process run exactly, since every image has its own seed. Rank 0 waits for
all ranks (torch.distributed: nccl on GPUs, gloo otherwise), then merges (bench: the shard folders into one
results.json and report; solve: one table of all rows). Restarting an interrupted run with the same command resumes
it. Without torchrun nothing here does anything; ``--shard i/n`` stays the scheduler-agnostic way for array jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def shard(self) -> str:
        return f"{self.rank}/{self.size}"


def world() -> World:
    """This process's place among torchrun's ranks (one process when not launched by torchrun)."""
    def env(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default
    size = env("WORLD_SIZE", 1)
    return World(rank=env("RANK", 0), size=size, local_rank=env("LOCAL_RANK", 0),
                  local_size=env("LOCAL_WORLD_SIZE", size))


def setup(device: str = "auto", threads: int = 0) -> "tuple[World, str]":
    """Join the process group (once) and choose this rank's device: ``cuda:LOCAL_RANK`` where CUDA is asked for or
    available, else the CPU with the node's cores split between its ranks (unless --threads is given)."""
    w = world()
    if not w.active:
        return w, device
    import torch
    import torch.distributed as dist

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(w.local_rank)
        device = f"cuda:{w.local_rank}"
    else:
        device = "cpu"
        if not threads:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, w.local_size)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return w, device


def gather(obj) -> "list | None":
    """Every rank's ``obj`` on rank 0 (a list in rank order), None on the others; waits for all ranks."""
    w = world()
    if not w.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * w.size if w.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if world().active:
        import torch.distributed as dist

        dist.barrier()


def finish() -> None:
    if world().active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
