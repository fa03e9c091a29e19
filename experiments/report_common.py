"""Pieces every section of ``REPORT.md`` is built from: "mean ± std (n)" cells, result and comparison tables,
figure links. Tables go through :func:`common.report.markdown_table`, numbers through :func:`common.report.fmt`, and
every number comes from ``study.json``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.report import fmt, markdown_table

PM = "±"


def stat_cell(stat: dict, digits: int = 3) -> str:
    """``mean ± std (n)``; one seed: ``mean (1)``; no finished run: ``not run``."""
    if not stat or not stat["n"]:
        return "not run"
    if stat["n"] < 2:
        return f"{fmt(stat['mean'], digits)} (1)"
    return f"{fmt(stat['mean'], digits)} {PM} {fmt(stat['std'], digits)} ({stat['n']})"


def headline(study: dict, problem: str) -> dict[str, dict]:
    return {h["key"]: h for h in study["headline"][problem]}


def family(study: dict, key: str) -> dict | None:
    """The family ``key`` of ``study`` (its members and comparisons), or ``None``."""
    return next((f for f in study["families"] if f["key"] == key), None)


def nominal_seeds(study: dict) -> int:
    return study["meta"]["seeds"]


def exp_cell(study: dict, key: str) -> str:
    """The row label of an experiment: its key (what ``--seeds-for`` and the folders use) and title; a dagger when it
    has fewer finished seeds than the study's ``--seeds``."""
    e = study["experiments"][key]
    dagger = " †" if e["n"] < nominal_seeds(study) else ""
    return f"`{key}`{dagger} {e['title']}"


def fewer_seeds_note(study: dict, keys: Sequence[str]) -> list[str]:
    """Say which experiments of a table have fewer seeds than the study's ``--seeds``, and why."""
    n = nominal_seeds(study)
    notes = []
    for k in keys:
        e = study["experiments"][k]
        if e["n"] < n:
            planned = len(e["planned_seeds"])
            why = ", ".join([*(["fewer seeds planned (`--seeds-for`)"] if planned < n else []),
                             *([f"{planned - e['n']} planned run(s) not finished yet"] if e["n"] < planned else [])])
            notes.append(f"`{k}` has {e['n']} of {n} seeds: {why}")
    return ["", "† " + "; ".join(notes) + "."] if notes else []


def command_line(study: dict) -> str:
    return f"Command: `{study['meta']['command']}` (each run's: [How to reproduce](#how-to-reproduce))."


def results_table(study: dict, problem: str, keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """One row per experiment, one "mean ± std (n)" column per headline metric."""
    h = headline(study, problem)
    keys = [k for k in keys if k in study["experiments"]]
    rows = [[exp_cell(study, k), *(stat_cell(study["experiments"][k]["metrics"][m], h[m]["digits"]) for m in metrics)]
            for k in keys]
    return [command_line(study), "", *markdown_table(["experiment", *(h[m]["label"] for m in metrics)], rows),
            *fewer_seeds_note(study, keys)]


def comparison_table(study: dict, family: str, metrics: Sequence[str] | None = None) -> list[str]:
    """The family's comparisons under the difference rule: each metric's two means, their difference, the
    threshold (twice the standard error of the difference) and the verdict."""
    comps = [c for c in study["comparisons"] if c["family"] == family and (metrics is None or c["metric"] in metrics)]
    if not comps:
        return []
    problem = study["experiments"][comps[0]["a"]]["problem"]
    h = headline(study, problem)
    rows = [[f"`{c['a']}` vs `{c['b']}`", h[c["metric"]]["label"], fmt(c["mean_a"]), fmt(c["mean_b"]),
             fmt(c["diff"]), fmt(c["threshold"]), c["verdict"]] for c in comps]
    title = next((f["title"] for f in study["families"] if f["key"] == family), family)
    return [f"Differences within {title} under the study's rule (see the introduction); the threshold is twice the "
            "standard error of the difference:", "",
            *markdown_table(["comparison", "metric", "mean a", "mean b", "a - b", "threshold", "verdict"], rows)]


def first_run(study: dict, key: str) -> dict | None:
    """The finished run of ``key`` with the study's first seed (or its first finished seed): the run whose figures
    the report shows."""
    runs = [r for r in study["runs"] if r["experiment"] == key]
    return min(runs, key=lambda r: study["experiments"][key]["planned_seeds"].index(r["seed"]), default=None)


def figure(results_dir: Path, rel: str, caption: str) -> list[str]:
    """A figure link relative to ``REPORT.md`` (in ``results_dir``), or a note that it was not drawn."""
    if (results_dir / rel).is_file():
        return [f"![{caption}]({rel})", ""]
    return [f"({caption}: `{rel}` was not drawn.)", ""]


def run_figure(study: dict, results_dir: Path, key: str, name: str, caption: str) -> list[str]:
    run = first_run(study, key)
    if run is None:
        return [f"({caption}: `{key}` has no finished run.)", ""]
    return figure(results_dir, f"{run['dir']}/{name}", f"{caption} (`{key}`, seed {run['seed']})")
