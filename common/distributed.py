"""Data-parallel training under ``torchrun``: gloo on CPU, nccl on CUDA; a no-op for a single process.

``torchrun --nproc_per_node=N problemK/train.py`` sets RANK/WORLD_SIZE/LOCAL_RANK; plain
``python problemK/train.py`` does not, and then every function here leaves the run unchanged.
Each epoch's permutation comes from the same seeded generator on every rank and is split the way
``DistributedSampler`` splits it (padded to a multiple of the world size, then strided), so the
global batch sequence equals the single-process one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun; returns the info and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
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


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
