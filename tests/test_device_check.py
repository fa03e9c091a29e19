"""tools/device_check.sh, the GPU checks in one command, run on the CPU with tiny settings: every step runs and
succeeds, the torchrun step really takes the distributed path, and only small files are left to bring back."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from common.runtime import resolve_precision
from common.training import strip_timing
from problem1.config import Config as Config1

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



def test_device_study_trains_each_part_and_brings_back_exports_that_carry_over(tmp_path):
    """tools/device_study.sh on the CPU: each part trains its problem's runs and brings back an export that
    ``--continue-from`` accepts; problem 2's part carries over the finished runs of CARRY instead of training them
    (here problem 1's export, so that one script call tests both)."""
    out, here = tmp_path / "device", tmp_path / "here"
    quick = ["--quick", "--seeds", "1", "--quick-images", "4", "2", "--no-bench", "--run-figures", "none"]
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "WORK": str(tmp_path / "work"), "JOBS": "1",
           "CARRY": str(out / "p1_report"), "PYTHON": sys.executable, "PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "STUDY_ARGS": " ".join([*quick, "--experiments", "p1-spec", "p2-regression"])}
    r = subprocess.run(["bash", "tools/device_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = [line.split() for line in (out / "summary.txt").read_text().splitlines()]
    assert [s[0] for s in summary] == ["p1_train", "p1_export", "p2_train", "p2_export"]
    assert "runs: 1 train, 0 resume, 0 evaluate, 0 finished" in (out / "p1.log").read_text()
    assert re.search(r"carried over from \S+p1_report: 1 runs.*runs: 1 train, 0 resume, 0 evaluate, 0 finished",
                     (out / "p2.log").read_text(), re.S)
    exported = {p: sorted((e["experiment"], e["precision"]) for e in
                          json.loads((out / f"{p}_report" / "study.json").read_text())["runs"]) for p in ("p1", "p2")}
    p1 = resolve_precision(torch.device("cpu"), None, Config1.CPU_BF16_DEFAULT)  # bf16 on a native-bf16 CPU
    assert exported == {"p1": [("p1-spec", p1)], "p2": [("p1-spec", p1), ("p2-regression", "fp32")]}
    assert not list(out.rglob("*.pth"))
    # Back where the study runs, the export carries over into it.
    r = subprocess.run([sys.executable, "study.py", *quick, "--results-dir", str(here), "--report-only",
                        "--continue-from", str(out / "p2_report")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and ": 2 runs" in r.stdout, r.stdout + r.stderr
    assert len(json.loads((here / "study.json").read_text())["runs"]) == 2



def test_device_study_cut_short_still_reports_and_exports_and_fails(tmp_path):
    """A part cut at its time limit (rc 124) writes its report from the runs that finished (none here) and exports it;
    a part with no time left before the deadline is skipped; either makes the script fail. (Deadline 162 s less 100 s
    kept for the report: p1 starts with 62 s left, p2 after p1's three steps, at least 4 s, with under 60.)"""
    out = tmp_path / "device"
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "WORK": str(tmp_path / "work"), "JOBS": "1", "LIMIT": "1",
           "DEADLINE": "162", "RESERVE": "100", "PYTHON": sys.executable, "PROGRESS": "0",
           "STUDY_ARGS": "--quick --seeds 1 --quick-images 4 2 --experiments p1-spec"}
    r = subprocess.run(["bash", "tools/device_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    summary = [line.split()[:2] for line in (out / "summary.txt").read_text().splitlines()]
    assert r.returncode != 0
    assert summary == [["p1_train", "124"], ["p1_report", "0"], ["p1_export", "0"], ["p2_train", "skipped"]]
    assert json.loads((out / "p1_report" / "study.json").read_text())["runs"] == []


def test_device_check_keeps_within_its_deadline(tmp_path):
    """A step that would start too close to DEADLINE is recorded as skipped (and fails the script) instead of running
    past the device call's limit."""
    out = tmp_path / "device"
    env = {**os.environ, "OUT": str(out), "DEADLINE": "5", "PYTHON": "false"}
    r = subprocess.run(["bash", "tools/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    summary = [line.split() for line in (out / "summary.txt").read_text().splitlines()]
    assert r.returncode != 0 and summary == [[s, "skipped", "0"] for s in STEPS]
