"""``study.py --executor slurm``: the unfinished runs as one Slurm job array through submitit, on a results folder
that every node shares.

Each array task is one run, and does exactly what a ``--jobs`` worker does (:func:`experiments.parallel.work_run`:
train, or resume from ``last.pth``, then evaluate) with ``--slurm-cpus-per-task`` threads. The task reads the run's
state when it *starts*, so a task that Slurm requeues (preempted, or stopped by submitit shortly before its time
limit: :class:`RunJob` is checkpointable) resumes from the last finished epoch instead of starting again. The pair
evaluations (heatmap against regression, one folder per seed) are one more job that starts once the array has ended.

``study.py`` then waits (a progress line with the runs finished and the study's ETA) and writes the report; with
``--no-wait`` it returns at once and ``study.py --report-only`` collects later. Ctrl-C while waiting stops the
waiting only: the jobs go on. Which job holds which run is kept in ``RESULTS/slurm_jobs.json``, so a second
``study.py`` does not submit a run that is still queued or running; it waits for it instead. Slurm's and submitit's
own logs of each job are in ``RESULTS/slurm/``.

Job states come from ``squeue`` (not ``sacct``, which needs Slurm's accounting database that small clusters lack);
a run is finished when its folder says so, as everywhere else in the study.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Only submitting needs submitit (submit): study.py must still run on a machine that never submits to Slurm and
# lacks it (a lent GPU's image, which installs nothing).
try:
    import submitit
    from submitit.helpers import Checkpointable
except ModuleNotFoundError:
    submitit = None
    Checkpointable = object

from common.data import load_json
from common.errors import UserError
from common.io import atomic_write_json
from experiments.parallel import init_worker, work_run
from experiments.registry import PairRun, Run
from experiments.runner import (
    EVALUATE,
    FINISHED,
    RESUME,
    TRAIN,
    evaluate_pair,
    evaluation_seconds,
    finished_elsewhere,
    is_carried,
    pair_finished,
    run_log,
    run_state,
    study_progress,
)

JOBS_FILE = "slurm_jobs.json"  # run name -> the Slurm job that holds it (and the pair job), for later invocations
LOG_DIR = "slurm"  # submitit's pickles and Slurm's stdout/stderr of each job
POLL_SECONDS = 5.0
MAX_REQUEUES = 20  # time-limit requeues per run: a long run on a short --slurm-time continues over several jobs
REPO = Path(__file__).resolve().parent.parent  # the jobs import experiments/, problem1/, ... from here
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
        "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 180
    cpus_per_task: int = 2
    gpus_per_task: int = 0
    wait: bool = True


class RunJob(Checkpointable):
    """One run as a Slurm job. Checkpointable: on a preemption or the time limit submitit requeues the job with this
    same object, which then reads the run's state again and resumes from ``last.pth``."""

    def __init__(self, run: Run, threads: int):
        self.run, self.threads = run, threads

    def __call__(self) -> float | None:
        init_worker(self.threads)
        state = run_state(self.run)
        return None if state == FINISHED else work_run(self.run, state)


class PairJob(Checkpointable):
    """The pair evaluations whose members are all finished, once the array has ended."""

    def __init__(self, pairs: list[PairRun], results_dir: Path, device: str, threads: int):
        self.pairs, self.results_dir, self.device, self.threads = pairs, results_dir, device, threads

    def __call__(self) -> list[str]:
        init_worker(self.threads)
        done = []
        for pair in ready_pairs(self.pairs, self.results_dir):
            evaluate_pair(pair, self.results_dir, self.device)
            done.append(pair.name)
        return done


def require_submitit() -> None:
    if submitit is None:
        raise UserError("--executor slurm needs the submitit package: pip install -r requirements.txt")


def ready_pairs(pairs: list[PairRun], results_dir: Path) -> list[PairRun]:
    """The pairs to evaluate now: every member finished (and trained here, not carried), the pair not yet done."""
    return [p for p in pairs if all(finished_elsewhere(m) and not is_carried(m.dir) for m in p.members.values())
            and not pair_finished(p, results_dir)]


# --- the queue -------------------------------------------------------------------------------------------------

def queue_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job still known to the controller (``squeue``; array tasks one per line)."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True,
                         text=True)
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise UserError(f"squeue failed: {out.stderr.strip() or out.returncode}")
    states = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    return {j: states[j] for j in job_ids if j in states}


def read_jobs(results_dir: Path) -> dict:
    try:
        doc = load_json(results_dir / JOBS_FILE)
    except UserError:
        return {"runs": {}, "pairs": None}
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in runs.items()):
        raise UserError(f"{results_dir / JOBS_FILE}: not a study's record of Slurm jobs (field 'runs'); move it away")
    return {"runs": runs, "pairs": doc.get("pairs") if isinstance(doc.get("pairs"), str) else None}


def queued_runs(results_dir: Path) -> dict[str, str]:
    """Run name -> its job, for runs whose job is still queued or running."""
    jobs = read_jobs(results_dir)["runs"]
    live = queue_states(list(jobs.values()))
    return {name: job for name, job in jobs.items() if live.get(job) in LIVE}


# --- submitting and waiting ------------------------------------------------------------------------------------

def _executor(results_dir: Path, options: SlurmOptions, name: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=results_dir / LOG_DIR / "%j", cluster="slurm",
                                     slurm_max_num_timeout=MAX_REQUEUES)
    params = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task, "name": name,
              # the jobs unpickle functions of this repository: importable from any working directory
              "slurm_setup": [f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}", "export PROGRESS=0"]}
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.gpus_per_task:
        params["slurm_gpus_per_task"] = options.gpus_per_task
    executor.update_parameters(**params)
    return executor


def submit(runs: list[Run], pairs: list[PairRun], results_dir: Path, device: str, options: SlurmOptions,
           after: list[str]) -> dict:
    """Submit ``runs`` as one array and the pair job after it (and after the jobs ``after``); returns the updated
    record of jobs."""
    require_submitit()
    if shutil.which("sbatch") is None:
        raise UserError("--executor slurm: sbatch is not on PATH (not a Slurm machine?)")
    record = read_jobs(results_dir)
    ids = list(after)
    try:
        if runs:
            jobs = _executor(results_dir, options, "study").submit_array(
                [RunJob(r, options.cpus_per_task) for r in runs])
            record["runs"].update({r.name: j.job_id for r, j in zip(runs, jobs, strict=True)})
            ids += [j.job_id for j in jobs]
        if pairs:
            executor = _executor(results_dir, options, "study-pairs")
            if ids:
                executor.update_parameters(slurm_additional_parameters={
                    "dependency": "afterany:" + ":".join(sorted({i.split("_")[0] for i in ids}))})
            record["pairs"] = executor.submit(PairJob(pairs, results_dir, device, options.cpus_per_task)).job_id
    except Exception as e:  # sbatch's refusal (a partition that does not exist, ...) is the user's to fix
        if type(e).__module__.startswith("submitit") or isinstance(e, subprocess.CalledProcessError):
            raise UserError(f"--executor slurm: submission failed: {str(e).strip().splitlines()[-1]}") from None
        raise
    finally:
        if record["runs"] or record["pairs"]:
            atomic_write_json(results_dir / JOBS_FILE, record)
    return record


def run_study_slurm(runs: list[Run], pairs: list[PairRun], results_dir: Path, device: str,
                    options: SlurmOptions) -> dict[str, int] | None:
    """Submit the unfinished runs of ``runs`` (those not queued already) and the pair job; with ``options.wait``,
    wait for all of them and return how many runs were trained / resumed / evaluated only / skipped, else ``None``."""
    states, progress = study_progress(runs, jobs=len(runs))
    counts = dict.fromkeys((TRAIN, RESUME, EVALUATE, FINISHED), 0)
    for r in runs:
        counts[states[r.name]] += 1
    queued = queued_runs(results_dir)
    todo = [r for r in runs if states[r.name] != FINISHED and r.name not in queued]
    waiting = [r for r in runs if states[r.name] != FINISHED]
    pending_pairs = [p for p in pairs if not pair_finished(p, results_dir)
                     and not any(is_carried(m.dir) for m in p.members.values())  # no models to evaluate
                     and all(m in runs or finished_elsewhere(m) for m in p.members.values())]
    # An earlier pair job still queued goes first: two pair jobs must never evaluate one folder at once.
    earlier_pairs = read_jobs(results_dir)["pairs"]
    after = [queued[r.name] for r in waiting if r.name in queued]
    after += [earlier_pairs] if earlier_pairs and queue_states([earlier_pairs]).get(earlier_pairs) in LIVE else []
    record = submit(todo, pending_pairs, results_dir, device, options, after=after)
    if todo:
        array = record["runs"][todo[0].name].split("_")[0]
        progress.note(f"submitted {len(todo)} run(s) as Slurm job array {array}, {options.cpus_per_task} CPU(s)"
                      f"{f' and {options.gpus_per_task} GPU(s)' if options.gpus_per_task else ''} each"
                      f"{f', partition {options.partition}' if options.partition else ''}; logs in "
                      f"{results_dir / LOG_DIR}")
    if queued:
        progress.note(f"{len(queued)} run(s) still queued or running from an earlier submission: not submitted again")
    if pending_pairs:
        progress.note(f"pair evaluations: job {record['pairs']}, after the runs")
    if not options.wait:
        progress.close()
        print("not waiting (--no-wait): follow with squeue; when the jobs are done, the same command with "
              "--report-only writes the report", flush=True)
        return None
    try:
        _wait(runs, waiting, record, results_dir, progress)
    except KeyboardInterrupt:
        progress.close()
        raise UserError("stopped waiting; the Slurm jobs go on: run the same command again to wait, or add "
                        "--report-only once they are done") from None
    progress.close()
    return counts


def _wait(runs: list[Run], waiting: list[Run], record: dict, results_dir: Path, progress) -> None:
    """Until every job of ``waiting`` and the pair job has left the queue; a run that left it unfinished (cancelled,
    failed) is named in one line at the end."""
    logging.getLogger("submitit").setLevel(logging.ERROR)
    for i, run in enumerate(runs, 1):
        if run not in waiting:
            progress.skip(i, run)
    started, left = set(), {r.name: r for r in waiting}
    failed, t0 = [], time.monotonic()
    while True:
        jobs = {name: record["runs"][name] for name in left}
        live = queue_states([*jobs.values(), *([record["pairs"]] if record["pairs"] else [])])
        for name, run in list(left.items()):
            state = live.get(jobs[name])
            if name in started:
                progress.record_log(run, run_log(run))  # the ETA moves with every epoch
            if state == "RUNNING" and name not in started:
                started.add(name)
                progress.start(runs.index(run) + 1, run, f"Slurm job {jobs[name]}")
            if state in LIVE:
                continue
            del left[name]
            if finished_elsewhere(run):
                if name not in started:
                    progress.start(runs.index(run) + 1, run, f"Slurm job {jobs[name]}")
                progress.finish(run, evaluation_seconds(run.dir))
            else:
                failed.append(f"{name} (job {jobs[name]})")
        if not left and live.get(record["pairs"]) not in LIVE:
            break
        time.sleep(min(POLL_SECONDS, 0.5 + (time.monotonic() - t0) / 30))  # short jobs are seen ending soon
    if failed:
        progress.note(f"{len(failed)} run(s) left the queue unfinished: {', '.join(failed)}; their logs are in "
                      f"{results_dir / LOG_DIR}; the same command resumes them")
        raise UserError(f"{len(failed)} Slurm job(s) ended without finishing their run (cancelled or failed)")
