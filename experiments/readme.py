"""The README's headline block: the study's main results, rendered from an exported ``study.json`` between two
markers in ``README.md``, so the README never holds a result typed by hand (``study.py --export DIR --readme
README.md`` refreshes it; a test checks that the committed block equals what ``docs/report/study.json`` renders).
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from common.errors import UserError
from common.io import atomic_write_text
from common.report import markdown_table
from experiments.export import STUDY_JSON
from experiments.figures import FIGURES
from experiments.progress import format_duration
from experiments.registry import seeds_per_problem
from experiments.report import REPORT_NAME, findings_list
from experiments.report_appendix import machine_name
from experiments.report_common import members

BEGIN = "<!-- study:begin -->"
END = "<!-- study:end -->"
# The experiments whose run time the README gives: problem 1's three and problem 2's four methods.
P1_FAMILY, P2_FAMILY = "p1-main", "p2-methods"


def _median(values) -> float | None:
    v = [x for x in values if isinstance(x, (int, float))]
    return statistics.median(v) if v else None


def _run_times(study: dict) -> list[str]:
    """Training time of one run of each headline experiment: the medians over its finished runs, by machine (a
    letter in the table, named once below it: a machine's name is nine words, and every row would repeat one)."""
    keys = [*members(study, P1_FAMILY), *members(study, P2_FAMILY)]
    groups: dict[tuple, list[dict]] = {}
    for r in study["runs"]:
        if r["experiment"] in keys:
            key = (r["experiment"], r.get("precision") or "not recorded", machine_name(r.get("machine")))
            groups.setdefault(key, []).append(r["time"])
    if not groups:
        return []
    by_key = sorted(groups.items(), key=lambda g: keys.index(g[0][0]))
    letters = {m: chr(ord("A") + i) for i, m in enumerate(dict.fromkeys(k[2] for k, _ in by_key))}
    ordered = sorted(by_key, key=lambda g: (keys.index(g[0][0]), letters[g[0][2]]))
    rows = []
    for (key, precision, machine), ts in ordered:
        epoch, run = _median(t.get("s_per_epoch") for t in ts), _median(t.get("train_s") for t in ts)
        rows.append([f"`{key}`", precision, letters[machine], len(ts), "n/a" if epoch is None else f"{epoch:.1f} s",
                     "n/a" if run is None else format_duration(run)])
    return ["Training time of one run (median over its finished seeds; validation after every epoch included). "
            "A plain `python problem2/train.py` trains the heatmap and the regression run one after the other: "
            "the sum of their two rows.", "",
            *markdown_table(["experiment", "precision", "machine", "runs", "median epoch", "median run"], rows), "",
            "Machines: " + "; ".join(f"{letter}: {m}" for m, letter in letters.items()) + "."]


def _on_paper(study: dict) -> list[str]:
    """The study's wall time with more cores or nodes, from its runs' measured times (``study.json['time']``)."""
    paper = study["time"].get("on_paper_s")
    if not paper:
        return []
    n = {int(k): v for k, v in paper.items()}
    runs = study["time"]["runs_finished"]
    nodes = ", ".join(f"{format_duration(n[k])} on {k} nodes" + (" (one per run)" if k == study["time"]["runs_planned"]
                                                                 else "")
                      for k in sorted(n) if k > 8)
    return ["", f"The whole study, on paper: the {runs} runs' measured times (train and evaluate), longest first, each "
            "on the first free 2-core slot, each as fast as on the 2-core machine it ran on. One 2-core machine "
            f"{format_duration(n[1])}; a 16-core machine (`study.py --jobs 8 --threads-per-run 2`) "
            f"{format_duration(n[8])}; a Slurm cluster of 2-core nodes (`study.py --executor slurm`): {nodes}."]


def _seeds(study: dict) -> str:
    seeds = seeds_per_problem(study["meta"]["seeds"])
    if len(set(seeds.values())) == 1:
        return f"{seeds['problem1']} seeds per experiment"
    return f"{seeds['problem1']} seeds per problem-1 experiment and {seeds['problem2']} per problem-2 experiment"


def _figure(report_dir: Path, readme_dir: Path, rel: str, caption: str) -> list[str]:
    """A link to an exported figure, relative to the README; nothing when the export holds no such figure."""
    path = report_dir / rel
    if not path.is_file():
        return []
    return [f"![{caption}]({Path(os.path.relpath(path, readme_dir)).as_posix()})", ""]


def readme_block(study: dict, report_dir: Path, readme_dir: Path) -> str:
    """The markdown between :data:`BEGIN` and :data:`END` (markers included), from ``study`` (the ``study.json`` in
    ``report_dir``): the study's findings in words, each linking to its evidence in the report, the two overview
    figures and the time one run takes; links are relative to ``readme_dir``."""
    rel = Path(os.path.relpath(report_dir, readme_dir)).as_posix()
    t = study["time"]
    lines = [BEGIN,
             f"From [`{rel}/{STUDY_JSON}`]({rel}/{STUDY_JSON}), written by `{study['meta']['command']}`: "
             f"{t['runs_finished']} of {t['runs_planned']} planned runs finished, "
             f"{format_duration(t['train_s'])} of training{' so far' if t['runs_finished'] < t['runs_planned'] else ''}"
             f", {_seeds(study)}. Numbers are mean ± standard deviation over seeds; "
             "\"raises\" and \"lowers\" mean the study's rule finds a difference (a 95% Welch interval that excludes "
             "zero after false-discovery control over all its comparisons). "
             f"The evidence, every table and figure: [`{rel}/{REPORT_NAME}`]({rel}/{REPORT_NAME}).", ""]
    lines += findings_list(study, f"{rel}/{REPORT_NAME}")
    lines += _figure(report_dir, readme_dir, FIGURES["p1_overview"], "Problem 1: AP@0.5 per class, every experiment")
    lines += _figure(report_dir, readme_dir, FIGURES["p2_overview"], "Problem 2: PCK against threshold, every method")
    lines += _run_times(study)
    lines += _on_paper(study)
    while lines[-1] == "":
        lines.pop()
    return "\n".join([*lines, END])


def _lines(text: str, path: Path) -> tuple[list[str], int, int]:
    """``text``'s lines (ends kept) and the indices of the :data:`BEGIN` and :data:`END` lines (whole lines, so prose
    may quote the markers)."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise UserError(f"{path}: needs one '{BEGIN}' line and, after it, one '{END}' line around the study's block")
    return lines, begins[0], ends[0]


def current_block(readme: Path) -> str:
    """The block now in ``readme``, markers included."""
    lines, begin, end = _lines(readme.read_text(encoding="utf-8"), readme)
    return "".join(lines[begin:end + 1]).rstrip("\n")


def check_readme(readme: Path) -> str:
    """``readme``'s text, after checking that it has the block's markers (before anything is written)."""
    if not readme.is_file():
        raise UserError(f"--readme {readme}: not found")
    try:
        text = readme.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--readme {readme}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    _lines(text, readme)
    return text


def update_readme(readme: Path, report_dir: Path) -> bool:
    """Render the block from ``report_dir/study.json`` into ``readme``; returns whether the file changed."""
    study_path = report_dir / STUDY_JSON
    if not study_path.is_file():
        raise UserError(f"--readme: {study_path} not found (export the study first)")
    text = check_readme(readme)
    lines, begin, end = _lines(text, readme)
    block = readme_block(json.loads(study_path.read_text(encoding="utf-8")), report_dir, readme.parent)
    new = "".join(lines[:begin]) + block + "\n" + "".join(lines[end + 1:])
    if new != text:
        atomic_write_text(readme, new)
    return new != text
