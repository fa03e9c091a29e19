"""Pieces every section of ``REPORT.md`` is built from: "mean ± std" cells, result and comparison tables, figure
links, section anchors. Tables go through :func:`common.report.markdown_table`, numbers through
:func:`common.report.fmt`, and every number comes from ``study.json``.

The report states the seeds, the rule and the command once, in its introduction: a cell is "mean ± std" over the
study's seeds of its problem and carries its number of seeds only where that differs (``0.789 (n=1)``); a row names
an experiment
by its key, and the appendix's legend says what each key is.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.report import fmt, markdown_table
from experiments.findings import first_run  # noqa: F401  (the report shows that run's figures)
from experiments.registry import seeds_per_problem
from experiments.rule import DIFFERS, comparison  # noqa: F401  (the report's lookup of a verdict)

PM = "±"


def nominal_seeds(study: dict, problem: str) -> int:
    """The number of seeds the study plans for each of ``problem``'s experiments (its ``--seeds``)."""
    return seeds_per_problem(study["meta"]["seeds"])[problem]


def stat_cell(stat: dict | None, digits: int = 3, nominal: int | None = None) -> str:
    """``mean ± std``; with a number of seeds other than ``nominal`` (or no ``nominal``), ``mean ± std (n=2)`` or
    ``mean (n=1)``; no finished run: ``not run``."""
    if not stat or not stat["n"]:
        return "not run"
    n = "" if stat["n"] == nominal else f" (n={stat['n']})"
    if stat["n"] < 2:
        return f"{fmt(stat['mean'], digits)}{n}"
    return f"{fmt(stat['mean'], digits)} {PM} {fmt(stat['std'], digits)}{n}"


def headline(study: dict, problem: str) -> dict[str, dict]:
    return {h["key"]: h for h in study["headline"][problem]}


def family(study: dict, key: str) -> dict | None:
    """The family ``key`` of ``study`` (its members and comparisons), or ``None``."""
    return next((f for f in study["families"] if f["key"] == key), None)


def members(study: dict, key: str) -> list[str]:
    fam = family(study, key)
    return [k for k in fam["members"] if k in study["experiments"]] if fam else []


def exp_cell(study: dict, key: str) -> str:
    """The row label of an experiment: its key (what ``--seeds-for``, the folders and the legend use); a dagger when
    it has fewer finished seeds than the study's ``--seeds`` of its problem."""
    e = study["experiments"][key]
    return f"`{key}`" + (" †" if e["n"] < nominal_seeds(study, e["problem"]) else "")


def cell(study: dict, key: str, metric: str) -> str:
    e = study["experiments"][key]
    return stat_cell(e["metrics"][metric], headline(study, e["problem"])[metric]["digits"],
                     nominal_seeds(study, e["problem"]))


def not_run_note(study: dict, keys: Sequence[str]) -> list[str]:
    """The experiments of a table that have no finished run yet, named once instead of as rows of "not run"."""
    idle = [k for k in keys if k in study["experiments"] and not study["experiments"][k]["n"]]
    return ["", "Not run yet: " + ", ".join(f"`{k}`" for k in idle) + "."] if idle else []


def _ran(study: dict, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if k in study["experiments"] and study["experiments"][k]["n"]]


def fewer_seeds_note(study: dict, keys: Sequence[str]) -> list[str]:
    """Say which experiments of a table have fewer seeds than the study's ``--seeds`` of their problem, and why (those
    not run at all are :func:`not_run_note`'s)."""
    notes = []
    for k in _ran(study, keys):
        e = study["experiments"][k]
        n = nominal_seeds(study, e["problem"])
        if e["n"] < n:
            planned = len(e["planned_seeds"])
            why = ", ".join([*(["fewer seeds planned (`--seeds-for`)"] if planned < n else []),
                             *([f"{planned - e['n']} planned run(s) not finished yet"] if e["n"] < planned else [])])
            notes.append(f"`{k}` has {e['n']} of {n} seeds: {why}")
    return ["", "† " + "; ".join(notes) + "."] if notes else []


def results_table(study: dict, problem: str, keys: Sequence[str], metrics: Sequence[str],
                  extra: Sequence[Sequence[str]] = (),
                  columns: tuple[Sequence[str], Mapping[str, Sequence[str]]] = ((), {})) -> list[str]:
    """One row per experiment, one "mean ± std" column per headline metric, then the ``columns`` (their headers and
    each experiment's cells); then the ``extra`` rows."""
    h = headline(study, problem)
    ran = _ran(study, keys)
    more_header, more_cells = columns
    rows = [[exp_cell(study, k), *(cell(study, k, m) for m in metrics), *more_cells.get(k, [""] * len(more_header))]
            for k in ran] + [list(r) for r in extra]
    return [*markdown_table(["experiment", *(h[m]["label"] for m in metrics), *more_header], rows),
            *fewer_seeds_note(study, ran), *not_run_note(study, keys)]


def verdict_cell(c: dict | None) -> str:
    """A comparison in one cell: the difference and the rule's verdict (higher/lower where it differs)."""
    if c is None:
        return ""
    if c["diff"] is None:
        return c["verdict"]
    v = ("**higher**" if c["diff"] > 0 else "**lower**") if c["verdict"] == DIFFERS else c["verdict"]
    return f"{c['diff']:+.3f}, {v}"


def _against(study: dict, key: str, reference: str, metric: str) -> str:
    """``key``'s verdict cell against ``reference``, or against the experiment its family compares it with (e.g. the
    dilated head with the cosine schedule against the dilated head), named, so that no row is left blank."""
    c = comparison(study, key, reference, metric)
    if c is not None:
        return verdict_cell(c)
    own = next((c for c in study["comparisons"] if c["a"] == key and c["metric"] == metric), None)
    return f"vs `{own['b']}`: {verdict_cell(own)}" if own is not None else ""


def verdict_table(study: dict, keys: Sequence[str], reference: str, metrics: Sequence[str],
                  extra: Sequence[str] = (), extra_rows: Sequence[Sequence[str]] = ()) -> list[str]:
    """One row per experiment against ``reference``: for each of ``metrics`` its "mean ± std" and the rule's
    verdict against the reference (blank on the reference's row; a row the study compares with another experiment
    instead shows that comparison, naming it); then the ``extra`` metrics' cells. ``extra_rows`` (full rows, e.g. a
    bound) follow the experiments."""
    keys = [k for k in keys if k in study["experiments"]]
    if not keys:
        return []
    h = headline(study, study["experiments"][keys[0]]["problem"])
    header = ["experiment"]
    for m in metrics:
        header += [h[m]["label"], f"vs `{reference}`"]
    header += [h[m]["label"] for m in extra]
    rows = []
    for k in _ran(study, keys):
        row = [exp_cell(study, k)]
        for m in metrics:
            row += [cell(study, k, m), "(reference)" if k == reference else _against(study, k, reference, m)]
        rows.append(row + [cell(study, k, m) for m in extra])
    return [*markdown_table(header, [*rows, *(list(r) for r in extra_rows)]), *fewer_seeds_note(study, keys),
            *not_run_note(study, keys)]


def anchor(title: str) -> str:
    """The link target GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return "#" + re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


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
