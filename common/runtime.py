"""Reproducibility and device choice: the single owners of seeding and of picking a device."""
from __future__ import annotations

import contextlib
import ctypes
import random

import numpy as np
import torch

from common.errors import UserError


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). The only place the project seeds anything."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers cuda > mps > cpu; an explicit name must exist here, else a one-line error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device: unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return dev


def rng_state() -> dict:
    """Every RNG state a resumed run needs to continue bit-identically."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tune_cpu_allocator() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the OS after every step.

    By default every activation above glibc's dynamic mmap threshold (at most 32 MB; the detector's largest are
    ~50 MB at batch 16) is mmap-ed and unmapped again each step, so every step page-faults its working set back
    in. Raising both thresholds to 1 GiB measured 1.34 s -> 0.97 s per detector training step at batch 16 on a
    2-core CPU. Numerics are unchanged; the process keeps its peak RSS. A no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere (CPU runs stay fp32, exact and deterministic)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout for a model's weights (``Module.to(memory_format=...)``); convolutions then run in it.

    Channels-last (NHWC) measured faster on CPU for both problems' models (README, Performance). Note that a
    ``[B, 1, H, W]`` image batch is both NCHW- and NHWC-contiguous, so with contiguous weights the layout a conv
    picks depends on how the input tensor happened to be made; setting it on the weights makes it explicit.
    """
    return torch.channels_last if channels_last else torch.contiguous_format


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(model)`` when ``enabled`` (the ``--compile`` flag), else ``model`` itself.

    The compiled wrapper shares its parameters with ``model``, so checkpoints keep saving ``model.state_dict()``
    with unprefixed keys. Off by default: it costs a compile at start-up and measured at most 4% faster on CPU
    (README, Performance).
    """
    return torch.compile(model) if enabled else model
