"""The machine and library versions a study ran with, for the report's "how to reproduce" (no date: the report of
the same results must not change when it is rebuilt), and the machine a run or a benchmark ran on."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from common.runtime import cpu_has_native_bf16, pick_device

LIBRARIES = ("torch", "torchvision", "numpy", "matplotlib", "pillow", "tqdm")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux) with its family and model numbers, which tell apart CPUs
    that a virtual machine names alike (e.g. "AMD EPYC"); else what :mod:`platform` knows."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = f" (family {fields['cpu family']}, model {fields['model']})" if {"cpu family", "model"} <= set(fields) \
        else ""
    return fields["model name"] + numbers


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


def run_machine(device: str) -> dict:
    """The machine that runs on ``device``: recorded with each run at its evaluation (which follows its training in
    the same study process; a run folder never moves between machines, only carried records do) and with each
    ``bench.py --json`` file. For the report: studies that continue on other machines (``--continue-from``) mix
    machines whose speeds differ several-fold."""
    dev = pick_device(device)
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "device": dev.type,
            "native_bf16": cpu_has_native_bf16()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info
