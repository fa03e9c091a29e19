"""Ctrl-C during training keeps the last completed epoch's checkpoint, says how to resume, and exits cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_script_here

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROGRESS": "0", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
CASES = {
    # long enough that SIGINT lands mid-run; the run never gets that far
    "problem1": ["problem1/train.py", "--epochs", "50", "--limit-train", "8", "--limit-val", "4"],
    "problem2": ["problem2/train.py", "--epochs", "500", "--model", "regression"],
}


@pytest.mark.parametrize("problem", list(CASES))
def test_ctrl_c_keeps_checkpoint_and_resumes(problem, tiny_data, tmp_path, capsys):
    script, *args = CASES[problem]
    res = tmp_path / "res"
    cmd = [sys.executable, script, *args, "--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu"]
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT;
    # restore the default so the child gets KeyboardInterrupt as it would at a terminal.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 90
    while not (res / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err and "interrupted" in err
    epoch = torch.load(res / "last.pth", weights_only=True)["epoch"]
    assert 1 <= epoch < int(args[1])
    # The kept checkpoint resumes: one more epoch on top of it.
    r = run_script_here(capsys, *cmd[1:], "--resume", "--epochs", str(epoch + 1))  # in this process
    assert r.returncode == 0, r.stderr
    assert torch.load(res / "last.pth", weights_only=True)["epoch"] == epoch + 1
