"""tools/device_check.sh, the GPU checks in one command, run on the CPU with tiny settings: every step runs and
succeeds, the torchrun step really takes the distributed path, and only small files are left to bring back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.training import strip_timing

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["data", "bench", "p1_train", "p1_evaluate", "p2_train", "p2_evaluate", "torchrun"]


def _log(results: Path) -> list[dict]:
    return json.loads((results / "training_log.json").read_text())


def test_device_check_runs_every_step_and_leaves_no_checkpoints(tmp_path):
    out = tmp_path / "device"
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "PYTHON": sys.executable, "P1_EPOCHS": "1",
           "P2_EPOCHS": "1", "TORCHRUN_EPOCHS": "1", "NUM_TRAIN": "4", "NUM_VAL": "2", "BENCH_STEPS": "1",
           "BENCH_WARMUP": "0", "BENCH_BATCH": "2", "BENCH_PROBLEM": "2", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "tools/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = [line.split() for line in (out / "summary.txt").read_text().splitlines()]
    assert [s[0] for s in summary] == STEPS and all(s[1] == "0" for s in summary)
    # A one-GPU torchrun takes the distributed path (the process group and DDP: nccl there, gloo here), not the plain
    # single-process one, and with one rank it computes exactly what plain python does (the p1_train step, the same
    # settings in another process).
    assert "torchrun: 1 process, gloo" in (out / "torchrun.log").read_text()
    assert json.loads((out / "torchrun" / "config.json").read_text())["world_size"] == 1
    assert strip_timing(_log(out / "torchrun")) == strip_timing(_log(out / "problem1"))
    bench = json.loads((out / "bench.json").read_text())
    assert bench["meta"]["device"] == "cpu" and bench["meta"]["warmup"] == 0
    assert {r["batch_size"] for r in bench["results"].values()} == {2}
    assert (out / "problem1" / "metrics.json").is_file() and (out / "problem2" / "metrics.json").is_file()
    assert not list(out.rglob("*.pth")) and not (out / "datasets").exists()


def test_device_check_fails_when_a_step_fails_but_runs_and_records_every_step(tmp_path):
    out = tmp_path / "device"
    env = {**os.environ, "OUT": str(out), "PYTHON": "false"}  # every step's command fails at once
    r = subprocess.run(["bash", "tools/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    summary = [line.split() for line in (out / "summary.txt").read_text().splitlines()]
    assert r.returncode != 0 and [s[0] for s in summary] == STEPS and all(s[1] != "0" for s in summary)
