"""Training plumbing shared by both problems: checkpoints, resume, logs, finite-loss and Ctrl-C handling.

Resume contract: ``last.pth`` holds model, optimizer, scheduler, epoch, every RNG state and the log
so far, and each epoch shuffles with its own generator seeded by ``(seed, epoch)``. A resumed run
therefore replays exactly the epochs an uninterrupted run would have run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.config import config_from_dict
from common.errors import UserError
from common.io import atomic_torch_save, atomic_write_json
from common.runtime import rng_state, set_rng_state

TIMING_KEY = "time"  # per-epoch timing lives under this key, apart from the metrics


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of one epoch; independent of how many epochs ran before (resume)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning-rate multiplier of each optimiser step (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    A linear warm-up over the first ``warmup_steps`` steps (from ``1 / warmup_steps`` to 1), then ``'constant'``
    keeps 1 and ``'cosine'`` follows half a cosine from 1 down to 0 at step ``total_steps``.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / decay_steps)))

    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int,
                       warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step scheduler, or ``None`` for a constant rate without warm-up (the optimiser alone, unchanged)."""
    if schedule == "constant" and warmup_steps == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, total_steps, warmup_steps))


# Version 2 (2026-11): RNG states in plain form, so checkpoints load with ``weights_only=True``, and ``amp`` may be
# None (the default precision). Version 1 files have no "format" key.
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: str | Path, *, problem: str, config: Any, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, epoch: int = 0,
                    log: list | None = None, extra: dict | None = None) -> Path:
    """Write a self-describing checkpoint atomically (config included, so evaluation needs nothing else).

    It holds only what ``torch.load(weights_only=True)`` accepts: tensors, dicts, lists, tuples, numbers,
    strings and None.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "problem": problem,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "model": model.state_dict(),
        "epoch": epoch,
        "log": log or [],
        "rng": rng_state(),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if extra:
        state.update(extra)
    return atomic_torch_save(path, state)


def _legacy_numpy_globals() -> list[tuple[Any, str]]:
    """What a version-1 checkpoint's NumPy RNG state (a tuple holding a uint32 array) needs to unpickle, as
    ``(object, name in the pickle)`` pairs for :func:`torch.serialization.safe_globals`.

    Only array reconstruction: none of these runs user code. Allowlisted for that one load, never globally.
    """
    import numpy as np

    multiarray = (getattr(np, "_core", None) or np.core).multiarray  # numpy >= 2 renamed numpy.core
    pairs = [(multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
             (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # pickled by numpy 1.x
             (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        pairs.append((dtypes.UInt32DType, "numpy.dtypes.UInt32DType"))
    return pairs


def _refused(path: Path, names: list[str]) -> UserError:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return UserError(f"{path}: refused to load: it holds objects a checkpoint may not contain ({shown}); "
                     "only tensors, numbers, strings, lists and dicts are read, and no code from it was run")


def safe_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: a file can never run code when it is read.

    Version-1 checkpoints of this project pickled NumPy's RNG state; exactly the globals that state needs are
    allowlisted for such a file, and a file that needs anything else is refused with a :class:`UserError`.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # an object the safe loader refuses: see whether it is only the legacy NumPy state
    except Exception as e:  # torch raises many types for corrupt files
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    legacy = _legacy_numpy_globals()
    allowed = {name for _, name in legacy}
    try:
        # Reads the pickle's opcodes only; nothing is imported or called.
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    unknown = sorted(set(needed) - allowed)
    if unknown:
        raise _refused(path, unknown)
    try:
        with torch.serialization.safe_globals(legacy):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, [str(e).strip().splitlines()[0][:120]]) from None
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None


def load_checkpoint(path: str | Path, problem: str) -> dict:
    """Load a checkpoint safely on CPU; missing, unreadable, unsafe or the other problem's file is a UserError.

    A version-1 checkpoint's ``amp=True`` meant "bf16 on CUDA, fp32 on CPU", which is today's default (None).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path}: not a checkpoint written by this project")
    if ckpt.get("problem") != problem:
        raise UserError(f"{path}: checkpoint is from {ckpt.get('problem', 'an unknown model')}, expected {problem}")
    config = ckpt.get("config")
    if ckpt.get("format", 1) < 2 and isinstance(config, dict) and config.get("amp") is True:
        ckpt["config"] = {**config, "amp": None}
    return ckpt


def _some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_weights(model: torch.nn.Module, state_dict: Any, path: str | Path) -> None:
    """``load_state_dict`` with a one-line error naming a few missing, unexpected or misshapen keys and their counts."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError(f"{path}: checkpoint does not fit this model (its weights are not a dict of tensors)")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [f"{k} {list(state_dict[k].shape)} vs {list(v.shape)}" for k, v in own.items()
                 if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"{len(keys)} {what} ({_some(keys)})" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen)) if keys]
    if problems:
        raise UserError(f"{path}: checkpoint does not fit this model: {'; '.join(problems)}")
    model.load_state_dict(state_dict)


def restore_training(ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
                     path: str | Path = "last.pth") -> tuple[int, list]:
    """Load model/optimizer/scheduler/RNG state from ``ckpt``; returns ``(last_completed_epoch, log)``."""
    load_weights(model, ckpt["model"], path)
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]), list(ckpt.get("log", []))


def write_log(path: str | Path, log: list) -> None:
    atomic_write_json(path, log)


def strip_timing(log: list[dict]) -> list[dict]:
    """The log without timing fields: what must be identical across deterministic or resumed runs."""
    return [{k: v for k, v in rec.items() if k != TIMING_KEY} for rec in log]


class NonFiniteLoss(UserError):
    pass


def check_finite(losses: dict[str, float], epoch: int, step: int) -> None:
    """Stop on a NaN/inf loss, naming the epoch and step (the last good checkpoint stays on disk)."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, step {step} ({terms}); "
                            f"the last completed epoch's checkpoint is kept; try a lower --lr")


def interrupted_message(results_dir: str | Path, last_epoch: int, resume_cmd: str) -> str:
    return (f"interrupted: epoch {last_epoch} is the last completed epoch, saved in {Path(results_dir) / 'last.pth'}; "
            f"resume with: {resume_cmd} --resume")


# On --resume these come from the command line; everything else from the checkpoint, so the run stays the same run:
# where and how long it runs, and how it executes (memory format and torch.compile change speed, not the model).
RESUME_OVERRIDES = ("epochs", "device", "data_dir", "results_dir", "channels_last", "compile")


def resumed_config(cls: type, saved: dict, cfg: Any, precision: str | None = None) -> Any:
    """The checkpoint's config ``saved`` with only :data:`RESUME_OVERRIDES` taken from ``cfg`` (the command line).

    Other flags the user set away from their defaults are reported and ignored. ``precision`` is the one the run
    recorded (:func:`recorded_precision`): a run begun without ``--amp/--no-amp`` is pinned to it, so it goes on in
    the precision it began in even where the default precision has changed since.
    """
    old, defaults = config_from_dict(cls, saved), cls()
    changed = [f.name for f in dataclasses.fields(cls) if f.name not in RESUME_OVERRIDES
               and getattr(cfg, f.name) not in (getattr(old, f.name), getattr(defaults, f.name))]
    if changed:
        print(f"note: resuming with the checkpoint's {', '.join(changed)}; only {', '.join(RESUME_OVERRIDES)} "
              "may change on --resume", file=sys.stderr)
    if old.amp is None and precision in ("fp32", "bf16"):
        old = dataclasses.replace(old, amp=precision == "bf16")
    return dataclasses.replace(old, **{k: getattr(cfg, k) for k in RESUME_OVERRIDES})


def recorded_precision(results_dir: str | Path) -> str | None:
    """The precision a run in ``results_dir`` recorded in its ``config.json`` (``None``: none recorded)."""
    try:
        with open(Path(results_dir) / "config.json") as f:
            value = json.load(f).get("precision")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
