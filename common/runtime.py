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
    """``auto`` prefers cuda > mps > cpu; an explicit name must exist here, else a one-line error. On CUDA, fp32 is
    then exact (:func:`exact_fp32_on_cuda`)."""
    if name == "auto":
        if torch.cuda.is_available():
            exact_fp32_on_cuda()
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
    if dev.type == "cuda":
        exact_fp32_on_cuda()
    return dev


def exact_fp32_on_cuda() -> None:
    """Make fp32 on CUDA IEEE fp32. PyTorch lets cuDNN run fp32 convolutions in TF32 (a 10-bit mantissa) on Ampere and
    later GPUs by default: a run recorded as fp32 would then compute something else than on a CPU, and an experiment
    could mix the two under one precision. In bf16 runs only the operations autocast leaves in fp32 change.
    Afterwards, with torch >= 2.9, nothing may read the legacy ``torch.backends.cudnn.allow_tf32`` or enter
    ``torch.backends.cudnn.flags()``: torch raises on a mix of the two APIs (this project does neither).
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9; mixing in the old flags is an error
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def rng_state() -> dict:
    """Every RNG state a resumed run needs to continue bit-identically, in a form ``torch.load(weights_only=True)``
    accepts: tensors, lists, numbers and strings only (no NumPy arrays or other pickled objects)."""
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)  # {'bit_generator', 'state': {'key', 'pos'}, 'has_gauss', 'gauss'}
    state = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s output, or the pre-2026-11 form (Python's tuple and NumPy's legacy tuple)."""
    py = state["python"]
    if isinstance(py, dict):
        py = (py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"])
    random.setstate(py)
    npy = state["numpy"]
    if isinstance(npy, dict):
        npy = {"bit_generator": npy["bit_generator"],
               "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
               "has_gauss": npy["has_gauss"], "gauss": npy["gauss"]}
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs holds more states than this one has devices
        # (set_rng_state_all would fail on the first missing device): restore those that exist.
        for i, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, i)


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


def cpu_has_native_bf16() -> bool:
    """PyTorch's own check for bf16 arithmetic in hardware (AVX512-BF16 or AMX), not ``/proc/cpuinfo``.

    Without it oneDNN emulates bf16, which is slower than fp32, so autocast would only cost accuracy.
    """
    cpu = torch.cpu
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(check is not None and bool(check()) for check in checks)


PRECISIONS = ("fp32", "bf16")
def amp_help(cpu_bf16: bool = False) -> str:
    """The ``--amp/--no-amp`` help of a problem whose default on a CPU with native bf16 is ``cpu_bf16``."""
    on_cpu = "bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32" if cpu_bf16 else "exact fp32 on CPU"
    return (f"bf16 autocast of the model's forward pass. Default (neither flag): bf16 on CUDA, {on_cpu}. "
            "--amp: bf16 also on CPUs with native bf16 (others stay fp32). --no-amp: exact fp32 everywhere")


AMP_HELP = amp_help()
STUDY_AMP_HELP = ("bf16 autocast of the models' forward passes. Default (neither flag): bf16 on CUDA; on CPUs with "
                  "native bf16, bf16 for problem 1 and fp32 for problem 2 (each problem's validated default). "
                  "--amp: bf16 for both where native. --no-amp: exact fp32 everywhere")


def resolve_precision(device: torch.device, amp: bool | None, cpu_bf16: bool = False) -> str:
    """The precision a run actually uses: ``'bf16'`` (autocast) or ``'fp32'``.

    ``amp`` is the ``--amp/--no-amp`` switch: ``False`` is always exact fp32. ``None`` (neither flag) is the
    default: bf16 on CUDA; on a CPU with native bf16, bf16 only where the problem's full-run validation found no loss
    (``cpu_bf16``, the config's ``CPU_BF16_DEFAULT``; docs/performance.md), else fp32. ``True`` asks for bf16,
    which CUDA and CPUs with native bf16 get; emulated bf16 is slower than fp32, so other CPUs (and MPS) stay fp32.
    """
    if amp is False:
        return "fp32"
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and (amp is True or cpu_bf16) and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, amp: bool | None, cpu_bf16: bool = False):
    """bf16 autocast where :func:`resolve_precision` says so, else a no-op (exact fp32).

    Only the model's forward pass goes under it: losses, box decoding, NMS, AP, heatmap decoding and PCK take
    float32 (callers upcast outputs with ``.float()``).
    """
    if resolve_precision(device, amp, cpu_bf16) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout for a model's weights (``Module.to(memory_format=...)``); convolutions then run in it.

    Channels-last (NHWC) measured faster on CPU for both problems' models (docs/performance.md). Note that a
    ``[B, 1, H, W]`` image batch is both NCHW- and NHWC-contiguous, so with contiguous weights the layout a conv
    picks depends on how the input tensor happened to be made; setting it on the weights makes it explicit.
    """
    return torch.channels_last if channels_last else torch.contiguous_format


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(model)`` when ``enabled`` (the ``--compile`` flag), else ``model`` itself.

    The compiled wrapper shares its parameters with ``model``, so checkpoints keep saving ``model.state_dict()``
    with unprefixed keys. Off by default: it costs a compile at start-up and measured at most 4% faster on CPU
    (docs/performance.md).
    """
    return torch.compile(model) if enabled else model
