"""Shared fixtures: tiny generated datasets (same algorithm as the reference data, fewer images)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROGRESS", "0")  # no progress bars in test logs
os.environ.setdefault("MPLBACKEND", "Agg")

from common.synthetic import generate  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """``--data-dir`` with 16 train / 8 val images in both detection/ and keypoints/."""
    out = tmp_path_factory.mktemp("data")
    generate(out, num_train=16, num_val=8, seed=641)
    return out
