"""Data-parallel training under torchrun (2 CPU processes, gloo on loopback) against a single-process run.

The 2-process run uses the same global batch (``--batch-size`` is split over the ranks), so it visits the same
global batches in the same order as the single-process run. It is not bit-identical, for two measured reasons:
batch norm normalises with each rank's half batch (SyncBatchNorm needs CUDA), and problem 1 normalises its loss by
the positives of each rank's images. Measured relative differences of the logged losses: at most 2e-3 (problem 2,
heatmap, 2 epochs) and 4e-4 (problem 1, 2 epochs); RTOL = 2e-2 leaves a 10x margin. A wrong split (e.g. every rank
training on the whole epoch, i.e. twice the steps) changes the second epoch's loss by tens of percent.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_main

from common.distributed import DistInfo, local_batch_size
from common.errors import UserError
from problem1 import train as train1
from problem1.dataset import iterate_batches
from problem2 import train as train2

ROOT = Path(__file__).resolve().parents[1]
RTOL = 2e-2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], nproc: int, torchrun: bool | None = None) -> subprocess.CompletedProcess:
    """``args`` as plain python (one process) or under torchrun (``nproc`` processes; ``torchrun=True`` also for
    one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROGRESS": "0"}
    torchrun = nproc > 1 if torchrun is None else torchrun
    launcher = [] if not torchrun else ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                                      "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    proc = subprocess.run([sys.executable, *launcher, *args, "--device", "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _log(results: Path) -> list[dict]:
    return json.loads((results / "training_log.json").read_text())


def test_ranks_together_take_the_single_process_batches():
    n, batch, world = 21, 6, 2
    single = list(iterate_batches(n, batch, torch.Generator().manual_seed(5)))
    per_rank = [list(iterate_batches(n, batch // world, torch.Generator().manual_seed(5), DistInfo(r, world)))
                for r in range(world)]
    assert [len(b) for b in per_rank] == [4, 4]
    for k, expected in enumerate(single[:-1]):  # full batches: exactly the same images
        assert sorted(torch.cat([b[k] for b in per_rank]).tolist()) == sorted(expected.tolist())
    # the last, short batch is padded from the start of the order (DistributedSampler): 21 -> 22 images
    assert sorted(torch.cat([b[-1] for b in per_rank]).tolist()) == sorted(single[-1].tolist() + [single[0][0].item()])


def test_batch_size_must_divide_over_ranks():
    assert local_batch_size(32, DistInfo(0, 2)) == 16
    assert local_batch_size(7, DistInfo()) == 7
    with pytest.raises(UserError, match="not divisible"):
        local_batch_size(7, DistInfo(1, 2))


def test_problem2_two_processes_follow_single_process(tiny_data, tmp_path):
    args = ["problem2/train.py", "--data-dir", str(tiny_data), "--model", "heatmap", "--epochs", "2",
            "--batch-size", "8"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank computes
    try:  # the single-process reference in this process: only the 2-process run needs its own processes
        assert run_main(train2.main, [*args[1:], "--device", "cpu", "--results-dir", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    ddp = _run([*args, "--results-dir", str(tmp_path / "ddp")], 2)
    single, dist = _log(tmp_path / "single"), _log(tmp_path / "ddp")
    assert [r["epoch"] for r in dist] == [1, 2]
    for s, d in zip(single, dist, strict=True):
        assert d["train"]["loss"] == pytest.approx(s["train"]["loss"], rel=RTOL)
        assert d["val"]["loss"] == pytest.approx(s["val"]["loss"], rel=RTOL)
        assert d["train"]["loss"] != s["train"]["loss"] or d["val"]["loss"] != s["val"]["loss"]  # really 2 ranks
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    assert (tmp_path / "ddp" / "heatmap_model.pth").is_file()
    assert ddp.stdout.count("heatmap epoch 2/2") == 1  # only rank 0 prints


P1 = ["problem1/train.py", "--epochs", "1", "--batch-size", "8", "--limit-val", "4"]


@pytest.fixture(scope="session")
def p1_single(tiny_data, tmp_path_factory) -> Path:
    """One plain-python problem-1 run, in this process at one thread as the torchrun ranks compute: the reference of
    the two-process test below. (That a one-process torchrun computes exactly what plain python does, in another
    process, is checked by ``test_device_check.py``, whose script runs both.)"""
    results = tmp_path_factory.mktemp("p1_single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_main(train1.main, [*P1[1:], "--device", "cpu", "--data-dir", str(tiny_data), "--results-dir",
                                      str(results)]) == 0
    finally:
        torch.set_num_threads(threads)
    return results


@pytest.mark.xdist_group("p1_single")
def test_problem1_two_processes_follow_single_process(tiny_data, tmp_path, p1_single):
    ddp = _run([*P1, "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "ddp")], 2)
    (s,), (d,) = _log(p1_single), _log(tmp_path / "ddp")
    for k in ("loss_obj", "loss_cls", "loss_loc", "loss_total"):
        assert d["train"][k] == pytest.approx(s["train"][k], rel=RTOL), k
        assert d["val"][k] == pytest.approx(s["val"][k], rel=RTOL), k
    assert d["train"] != s["train"]  # the per-rank batch norm shows: these are really 2 ranks
    assert (tmp_path / "ddp" / "last.pth").is_file()
    assert ddp.stdout.count("epoch 1/1") == 1
