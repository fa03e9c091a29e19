"""The machine and library versions a study ran with, for the report's "how to reproduce" (no date: the report of
the same results must not change when it is rebuilt)."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

LIBRARIES = ("torch", "torchvision", "numpy", "matplotlib", "pillow", "tqdm")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(lib: str) -> str:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "libraries": {lib: _version(lib) for lib in LIBRARIES}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
