"""Data-parallel training on one machine: ``torchrun --nproc_per_node N`` starts N copies of ``train``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address
in each process's environment; :func:`start` joins them into one process group
(NCCL between GPUs, gloo on the CPU) and gives each its own GPU. Without those
variables training runs as one process and every call here is a no-op.

The frame stage is the data-parallel part: each rank reads its own shard of the
face table (``models.streaming``), DistributedDataParallel averages gradients,
and validation is sharded and gathered so every rank takes the same
early-stopping decision. Only rank 0 writes (config, metrics, state, checkpoint);
calibration and the sequence stage run on rank 0 alone once the others have left.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from models.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the data-parallel group (rank 0 of 1 when training alone)."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 and dist.is_initialized()

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several ranks (gradients averaged)."""
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # The manipulation head gets no gradient from a batch without a known method.
        unused = getattr(model, "manipulation_head", None) is not None
        # Crops arrive channels_last; weights in the same layout get gradients DDP's buckets can take as they are.
        model.to(memory_format=torch.channels_last)
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def gather(self, value: Any) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere (each rank updated its own in its last batch)."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)

    def leave(self) -> None:
        """End the group: the other ranks are done; rank 0 goes on alone."""
        if self.active:
            dist.barrier()
            dist.destroy_process_group()


def start(device: str, timeout_minutes: float = 60) -> Ranks:
    """Join torchrun's process group when there is one; else one rank on ``device``.

    Ranks other than 0 log warnings only, so torchrun's output reads as one run's.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(0, 1, resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda":
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    logger.info("data-parallel training: %d ranks (%s)", world, dist.get_backend())
    return Ranks(rank, world, target)
