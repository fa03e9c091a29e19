"""Data-parallel training under ``torchrun``: gloo on CPU, nccl on CUDA; a no-op for a single process.

``torchrun --nproc_per_node=N problemK/train.py`` sets RANK/WORLD_SIZE/LOCAL_RANK; plain
``python problemK/train.py`` does not, and then every function here leaves the run unchanged.
Each epoch's permutation comes from the same seeded generator on every rank and is split the way
``DistributedSampler`` splits it (padded to a multiple of the world size, then strided), so the
global batch sequence equals the single-process one: each rank takes ``batch_size / world_size`` of them per step.

Batch norm: on CUDA the models are converted to ``SyncBatchNorm``; on CPU (gloo) that layer is not available, so
each rank normalises with its own share of the batch and the losses match a single-process run only within a
tolerance. DDP broadcasts rank 0's running statistics at every training forward; :func:`broadcast_buffers` does it
once more before validation, so every rank then holds exactly rank 0's (saved) model.

Validation: every rank evaluates that identical model on the full validation set, so the metrics are the same on
every rank (the "reduction" is exact and needs no communication) and belong to the checkpoint rank 0 saves. This
costs one full validation per rank in wall time, as in a single-process run; sharding it with
:func:`all_gather_list` would only pay off for validation sets much larger than these 200 images.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: one process still takes the distributed path (e.g. nccl on a GPU)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    def describe(self) -> str:
        """``", torchrun: N process(es), <backend>"`` for a distributed run, else ``""`` (for the start-up line)."""
        if not self.enabled:
            return ""
        return (f", torchrun: {self.world_size} process{'es' if self.world_size > 1 else ''}, "
                f"{dist.get_backend() if dist.is_initialized() else 'no process group'}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun (even as its only process, so that a one-GPU torchrun runs the
    nccl path); returns the info and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "LOCAL_RANK" not in os.environ:  # torchrun always sets LOCAL_RANK; plain python does not
        return DistInfo(), device
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), launched=True)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def shard_indices(perm: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of an epoch permutation ``Tensor[N]`` (DistributedSampler semantics)."""
    if not info.enabled:
        return perm
    n = perm.numel()
    total = -(-n // info.world_size) * info.world_size
    padded = torch.cat([perm, perm[: total - n]]) if total > n else perm
    return padded[info.rank:total:info.world_size]


def local_batch_size(batch_size: int, info: DistInfo) -> int:
    """The per-rank batch: ``--batch-size`` is the global batch, split evenly over the ranks."""
    if batch_size % info.world_size:
        raise UserError(f"--batch-size {batch_size} is not divisible by the {info.world_size} processes of torchrun")
    return batch_size // info.world_size


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` itself for one process, else a DDP wrapper (SyncBatchNorm on CUDA) sharing its parameters.

    Train through the wrapper; evaluate and save ``model`` (same parameters, state-dict keys unchanged).
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # reuses the Parameter objects and buffers
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics, per rank on CPU) to every rank."""
    if info.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def quiet_unless_main(info: DistInfo) -> None:
    """Only rank 0 prints: other ranks' stdout goes to devnull and their progress bars are off (errors still show
    on stderr)."""
    if info.enabled and not info.is_main:
        sys.stdout = open(os.devnull, "w")  # kept open for the life of the process
        os.environ["PROGRESS"] = "0"


def all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average scalar metrics over ranks (identity for a single process)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def all_gather_list(items: list, info: DistInfo) -> list:
    """Concatenate per-rank Python lists (e.g. per-image predictions) on every rank."""
    if not info.enabled:
        return items
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, items)
    return [x for part in gathered for x in part]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo | None = None) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
