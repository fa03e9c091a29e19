"""``study.py --executor slurm`` on a real Slurm cluster (``bash tools/slurm_cluster.sh start``, which ``.ci/run``
does): the study's numbers equal a local run's, and a job killed mid-run resumes from its ``last.pth`` when the
study is run again. Skipped where ``sbatch`` is absent; never faked."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import P2_PAIR_STUDY

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROGRESS": "0", "MPLBACKEND": "Agg"}
# problem 2's specified pair at one seed (two runs and their pair evaluation), one thread each
SMALL = ["--quick", "--only", "p2", "--experiments", "p2-heatmap", "p2-regression", "--seeds", "1", "--device",
         "cpu", "--no-bench", "--run-figures", "none"]  # numbers are what is compared

pytestmark = pytest.mark.skipif(shutil.which("sbatch") is None,
                                reason="no Slurm here (sbatch not on PATH): bash tools/slurm_cluster.sh install/start")


def _study(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "study.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def cluster() -> None:
    """A Slurm that answers: sbatch without a cluster behind it is an error here, not a skip."""
    up = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    assert up.returncode == 0 and up.stdout.strip(), \
        f"sbatch is installed but no cluster answers ({up.stderr.strip()}): bash tools/slurm_cluster.sh start"


def _runs(results: Path) -> dict[str, dict]:
    study = json.loads((results / "study.json").read_text())
    # a pair's record names its folders and its members' checkpoints (which hold their paths); its numbers: failures
    return {**{r["dir"]: r["metrics"] for r in study["runs"]}, **{p["dir"]: p["failures"] for p in study["pairs"]}}


def _squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", job.split("_")[0]], capture_output=True,
                          text=True).stdout


@pytest.mark.xdist_group("p2_pair_study")
def test_slurm_study_equals_local_and_resumes_a_cancelled_run(cluster, tmp_path, p2_pair_study):
    local, slurm = p2_pair_study, tmp_path / "slurm"  # the same study, one run after the other, one thread each
    out = _study(*P2_PAIR_STUDY, "--results-dir", str(slurm), "--executor", "slurm", "--slurm-cpus-per-task", "1")
    assert "Slurm job array" in out.stdout, out.stdout
    numbers = _runs(local)
    assert len(numbers) == 3 and numbers == _runs(slurm)  # two runs and the pair evaluation, number for number
    jobs = json.loads((slurm / "slurm_jobs.json").read_text())
    assert set(jobs["runs"]) == {"p2-heatmap/seed641", "p2-regression/seed641"} and jobs["pairs"]
    for run in ("p2-heatmap", "p2-regression"):  # the job ran with the CPUs it asked for
        assert json.loads((slurm / "study" / run / "seed641" / "study_timing.json").read_text())["threads"] == 1

    # Kill the heatmap's job after its first epoch, then run the study again: it resumes, keeping epoch 1.
    epochs = 6  # more than the job can finish between its first epoch and the kill
    cancelled = tmp_path / "cancelled"
    args = [*SMALL, "--experiments", "p2-heatmap", "--quick-images", "32", "4", "--quick-epochs", "1", str(epochs),
            "--results-dir", str(cancelled), "--executor", "slurm", "--slurm-cpus-per-task", "1"]
    _study(*args, "--no-wait")
    run = cancelled / "study" / "p2-heatmap" / "seed641"
    job = json.loads((cancelled / "slurm_jobs.json").read_text())["runs"]["p2-heatmap/seed641"]
    log: list = []
    deadline = time.monotonic() + 120
    while not log and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            log = json.loads((run / "training_log.json").read_text())
        except (OSError, ValueError):
            pass
    assert log, "the job never finished an epoch"
    subprocess.run(["scancel", "--signal", "KILL", job], check=True)  # at once, not SIGTERM and KILL 2 s later
    while _squeue(job).strip():
        time.sleep(0.2)
    before = json.loads((run / "training_log.json").read_text())
    assert 1 <= len(before) < epochs, f"cancelled too late: {len(before)} epochs"
    out = _study(*args)
    after = json.loads((run / "training_log.json").read_text())
    assert len(after) == epochs and after[:len(before)] == before  # the finished epochs kept, not trained again
    worker = (run / "study_worker.log").read_text()
    assert f"epochs {len(before) + 1}..{epochs}" in worker, worker
    new_job = json.loads((cancelled / "slurm_jobs.json").read_text())["runs"]["p2-heatmap/seed641"]
    assert new_job != job and (run / "metrics.json").is_file()
