"""Shared fixtures: tiny generated datasets (same algorithm as the reference data, fewer images), and one tiny
trained detector.

The suite runs on every core (``pytest -n auto``, pyproject.toml): tests that share an expensive fixture carry one
``xdist_group`` mark, so a single worker builds it once, and each worker computes with its share of the cores."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROGRESS", "0")  # no progress bars in test logs
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest -n N: the cores shared out, not N x all of them
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = _threads  # this worker's torch and every process it starts
    import torch

    torch.set_num_threads(int(_threads))

from common.synthetic import generate  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """``--data-dir`` with 16 train / 8 val images in both detection/ and keypoints/."""
    out = tmp_path_factory.mktemp("data")
    generate(out, num_train=16, num_val=8, seed=641)
    return out


@pytest.fixture(scope="session")
def overfit_detector(tiny_data):
    """A problem-1 detector after 20 Adam steps (lr 1e-3, seed 0) on 4 training images: ``(model, batch, history)``,
    ``history`` the loss terms before every step. Trained once per session: the overfit test reads its history, the
    bf16 evaluation test evaluates the model."""
    import torch

    from problem1.dataset import load_split
    from problem1.loss import DetectionLoss
    from problem1.model import MultiScaleDetector
    from problem1.utils import default_anchors

    torch.manual_seed(0)
    data = load_split(tiny_data, "train", limit=4)
    images, boxes, labels = data.get_batch(torch.arange(4))
    model, crit, anchors = MultiScaleDetector(), DetectionLoss(), default_anchors()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        losses = crit(model(images), (boxes, labels), anchors)
        opt.zero_grad()
        losses["loss_total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return model, data, history


@pytest.fixture(scope="session")
def p2_pair_study(tmp_path_factory):
    """``helpers.P2_PAIR_STUDY`` run one run after the other with one thread (``--threads-per-run 1``), in this process:
    the reference that ``--jobs 2`` and the Slurm executor must reproduce number for number."""
    import torch
    from helpers import P2_PAIR_STUDY, run_main

    import study

    results = tmp_path_factory.mktemp("p2_pair") / "local"
    threads = torch.get_num_threads()
    try:
        assert run_main(study.main, [*P2_PAIR_STUDY, "--threads-per-run", "1", "--results-dir", str(results)]) == 0
    finally:
        torch.set_num_threads(threads)
    return results


# The longest tests first, so that under ``-n auto`` they start at once instead of after the quick ones (a worker
# takes the next test, or the next xdist_group, in this order). Measured with ``--durations``.
LONGEST_FIRST = ("test_study.py::test_quick_study", "test_slurm.py", "test_study.py::test_export",
                 "test_study.py::test_continue_from_carries_an_exported", "test_device_check.py",
                 "test_study.py::test_jobs", "test_distributed.py", "test_amp.py", "test_study.py::test_kill9",
                 "test_problem1_cli.py", "test_interrupt.py", "test_bench.py", "test_problem2_cli.py",
                 "test_problem2_methods.py")


@pytest.hookimpl(trylast=True)  # after pytest-xdist has marked each grouped test's node id with its group
def pytest_collection_modifyitems(config, items):
    grouped = [i for i in items if i.get_closest_marker("xdist_group")]
    if config.getoption("loadgroup", False) and grouped and "@" not in grouped[0].nodeid:
        warnings.warn("pytest-xdist's --dist loadgroup does not group tests with this pytest (pytest-xdist#1386): "
                      "the shared fixtures are built on every worker that needs them; pip install 'pytest<9.2'",
                      stacklevel=1)

    def rank(item) -> int:
        path = item.nodeid.split("/")[-1]
        return next((i for i, p in enumerate(LONGEST_FIRST) if path.startswith(p)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest keeps its order
