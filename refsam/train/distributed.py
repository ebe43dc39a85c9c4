"""torchrun-compatible DDP helpers (world size 1 on CPU without any process group).

``torchrun --nproc_per_node N -m refsam.cli train --config …`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed` reads
them, picks the device (``cuda:<local_rank>`` or CPU), and joins the process group (NCCL
on GPUs, gloo on CPU). The training loader splits shards by rank and worker
(``build_train_loader(rank=…, world_size=…)``) and fails clearly when there are fewer
shards than ranks × workers. Only rank 0 logs and writes checkpoints. DDP runs with
``find_unused_parameters=False``: the model exposes only parameters that get gradients.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from refsam.modeling.device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto", *, timeout_min: float = 30.0) -> DistEnv:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; else a world of one.
    ``timeout_min`` bounds every collective (``train.dist_timeout_min``): a rank that waits
    longer fails with a timeout instead of hanging the job."""
    world_size = env_world_size()
    base = resolve_device(device)
    if world_size <= 1:
        return DistEnv(device=base)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if base.type == "cuda":
        torch.cuda.set_device(local_rank)
        run_device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        run_device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(minutes=timeout_min),
        )
    log.info("rank %d/%d on %s (%s)", rank, world_size, run_device, backend)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=run_device)


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """DDP-wrap ``model`` in a distributed run (no unused-parameter search); else as is."""
    if not env.distributed:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=False
    )


def barrier(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
