"""``study.py --jobs N --threads-per-run T``: N runs at once on one machine, each in its own process limited to T
threads (on a CUDA machine, N runs packed onto the GPU).

Why: the study is dozens of independent runs of small convnets, which gain little from more threads per run but
almost linearly from more runs at once. Each run is exactly what the sequential study does (:func:`train_run` then
:func:`evaluate_run` in a worker process; a run's numbers depend on its thread count, not on its neighbours), and a
run's ``study_timing.json`` records the thread count it ran with. The trainers' own output of each run goes to
``study_worker.log`` in its folder; the terminal shows the study line: every running run and the study's ETA.

Ctrl-C stops every run: each worker's trainer keeps its last finished epoch (the same handling as a single run), so
the same study command resumes all of them. Pairs are evaluated in this process once all their members are.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from pathlib import Path

from experiments.registry import PairRun, Run
from experiments.runner import (
    EVALUATE,
    FINISHED,
    RESUME,
    TRAIN,
    DataCache,
    evaluate_pair,
    evaluate_run,
    finished_elsewhere,
    is_carried,
    pair_finished,
    run_log,
    study_progress,
    train_run,
)

WORKER_LOG = "study_worker.log"  # a run's trainer and evaluator output when it ran in a worker process
_worker_data: DataCache | None = None  # problem 2's datasets, decoded once per worker process


def init_worker(threads: int | None) -> None:
    global _worker_data
    import torch

    os.environ["PROGRESS"] = "0"  # a worker's bars would interleave with the others'; its log has the epoch lines
    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(max(1, min(threads, 2)))
    _worker_data = DataCache()


def work_run(run: Run, state: str) -> float:
    """One run in a worker process: train (unless only its evaluation is missing), then evaluate; returns the
    evaluation's wall seconds. The run's output goes to its ``study_worker.log``."""
    run.dir.mkdir(parents=True, exist_ok=True)
    with open(run.dir / WORKER_LOG, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        if state != EVALUATE:
            train_run(run, state, _worker_data if _worker_data is not None else DataCache())
        return evaluate_run(run)


def default_threads(jobs: int) -> int:
    """The threads of one run when ``jobs`` run at once: the machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_study_parallel(runs: list[Run], pairs: list[PairRun], results_dir: Path, device: str, jobs: int,
                       threads: int | None) -> dict[str, int]:
    """Like :func:`experiments.runner.run_study`, ``jobs`` runs at a time in worker processes of ``threads``
    threads each; returns how many runs were trained / resumed / evaluated only / skipped."""
    states, progress = study_progress(runs, jobs)
    done, evaluated = progress.done, progress.evaluated
    counts = dict.fromkeys((TRAIN, RESUME, EVALUATE, FINISHED), 0)
    todo = []
    for i, run in enumerate(runs, 1):
        counts[states[run.name]] += 1
        if states[run.name] == FINISHED:
            progress.skip(i, run)
        else:
            todo.append((i, run))
    outside = {m.name: finished_elsewhere(m) for p in pairs for m in p.members.values() if m.name not in states}
    pending = [p for p in pairs if all(outside.get(m.name, True) for m in p.members.values())]
    progress.note(f"{len(todo)} run(s) to do, {jobs} at a time, {threads or 'all'} thread(s) each; each run's "
                  f"output in its folder's {WORKER_LOG}")
    # spawn: a fresh interpreter per worker, so no thread pool or CUDA context of this process is inherited
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=init_worker,
                                  initargs=(threads,))
    running: dict[cf.Future, Run] = {}
    queue = list(todo)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                i, run = queue.pop(0)
                state = states[run.name]
                what = {TRAIN: "train", RESUME: f"resume after epoch {done[run.name]}", EVALUATE: "evaluate"}[state]
                progress.start(i, run, what)
                running[pool.submit(work_run, run, state)] = run
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                seconds = future.result()  # a worker's error (a bad file, say) ends the study with it
                progress.record_log(run, run_log(run))
                progress.finish(run, seconds)
            for pair in [p for p in pending if all(evaluated.get(m.name, True) for m in p.members.values())]:
                pending.remove(pair)
                carried = [m.name for m in pair.members.values() if is_carried(m.dir)]
                if not pair_finished(pair, results_dir) and carried:
                    progress.note(f"not evaluating {pair.name}: {', '.join(carried)} carried over without a model")
                elif not pair_finished(pair, results_dir):
                    progress.note(f"evaluating {pair.name} ({', '.join(m.name for m in pair.members.values())})")
                    evaluate_pair(pair, results_dir, device)
    except (KeyboardInterrupt, SystemExit) as e:
        # Ctrl-C reached every worker too: each trainer keeps its last epoch and exits; wait for them, then say how
        # to go on.
        pool.shutdown(wait=True, cancel_futures=True)
        names = ", ".join(r.name for r in running.values())
        progress.note(f"study interrupted ({names or 'between runs'}); run the same study command again to continue "
                      "(finished runs are skipped, interrupted ones resume from their last.pth)")
        raise SystemExit(130) from (None if isinstance(e, KeyboardInterrupt) else e)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return counts
