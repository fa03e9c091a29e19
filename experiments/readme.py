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
from common.report import fmt, markdown_table
from experiments.export import STUDY_JSON
from experiments.figures import FIGURES
from experiments.progress import format_duration
from experiments.report import REPORT_NAME, machine_name
from experiments.report_common import exp_cell, family, fewer_seeds_note, first_run, stat_cell

BEGIN = "<!-- study:begin -->"
END = "<!-- study:end -->"
P1_METRICS = ["map50", "ap50_circle", "ap50_square", "ap50_triangle"]
P2_METRICS = ["pck@0.05", "pck@0.1", "pck@0.2", "auc"]
# The headline rows: problem 1's three experiments and problem 2's four methods (the specified pair, integral and
# SimCC); the ablations stay in the report.
P1_FAMILY, P2_FAMILY = "p1-main", "p2-methods"
P1_FAMILY_REFERENCE = "p1-spec"  # whose scale-specialisation figure the README shows


def _members(study: dict, key: str) -> list[str]:
    fam = family(study, key)
    return [k for k in fam["members"] if k in study["experiments"]] if fam else []


def _verdict(study: dict, family: str, key: str, metric: str) -> str:
    """``key`` against what the family compares it with, under the study's difference rule."""
    comps = [c for c in study["comparisons"] if c["family"] == family and c["metric"] == metric]
    c = next((c for c in comps if c["a"] == key), None)
    if c is None:
        return "(reference)" if any(c["b"] == key for c in comps) else "no comparison"
    if c["diff"] is None:
        return f"against `{c['b']}`: {c['verdict']}"
    return f"against `{c['b']}`: {c['diff']:+.3f}, {c['verdict']}"


def _table(study: dict, problem: str, family: str, metrics: list[str], extra: list[list[str]] = ()) -> list[str]:
    """One row per family member (and the ``extra`` rows): "mean ± std (n)" per metric, and the verdict against
    the family's reference in the first metric."""
    keys = _members(study, family)
    if not keys:
        return []
    h = {x["key"]: x for x in study["headline"][problem]}
    rows = [[exp_cell(study, k), *(stat_cell(study["experiments"][k]["metrics"][m], h[m]["digits"]) for m in metrics),
             _verdict(study, family, k, metrics[0])] for k in keys] + list(extra)
    header = ["experiment", *(h[m]["label"] for m in metrics), f"{h[metrics[0]]['label']}: difference, verdict"]
    return markdown_table(header, rows) + fewer_seeds_note(study, keys)


def _ceiling_rows(study: dict) -> list[list[str]]:
    """The hand-ambiguity ceiling as a row of the problem-2 table: the best any predictor can score on these labels."""
    c = study.get("ceiling")
    if not c:
        return []
    cells = [fmt(c["pck"][m.removeprefix("pck@")]) if m.startswith("pck@") else fmt(c["auc"]) for m in P2_METRICS]
    return [["hand-ambiguity ceiling (no predictor can score higher on these labels)", *cells, ""]]


def _median(values) -> float | None:
    v = [x for x in values if isinstance(x, (int, float))]
    return statistics.median(v) if v else None


def _run_times(study: dict) -> list[str]:
    """Training time of one run of each headline experiment: the medians over its finished runs, by machine."""
    keys = [*_members(study, P1_FAMILY), *_members(study, P2_FAMILY)]
    groups: dict[tuple, list[dict]] = {}
    for r in study["runs"]:
        if r["experiment"] in keys:
            key = (r["experiment"], r.get("precision") or "not recorded", machine_name(r.get("machine")))
            groups.setdefault(key, []).append(r["time"])
    rows = []
    for (key, precision, machine), ts in sorted(groups.items(), key=lambda g: keys.index(g[0][0])):
        epoch, run = _median(t.get("s_per_epoch") for t in ts), _median(t.get("train_s") for t in ts)
        rows.append([f"`{key}`", precision, machine, len(ts), "n/a" if epoch is None else f"{epoch:.1f} s",
                     "n/a" if run is None else format_duration(run)])
    if not rows:
        return []
    return ["Training time of one run (median over its finished seeds; validation after every epoch included). "
            "A plain `python problem2/train.py` trains the heatmap and the regression run one after the other: "
            "the sum of their two rows.", "",
            *markdown_table(["experiment", "precision", "machine", "runs", "median epoch", "median run"], rows)]


def _figure(report_dir: Path, readme_dir: Path, rel: str, caption: str) -> list[str]:
    """A link to an exported figure, relative to the README; nothing when the export holds no such figure."""
    path = report_dir / rel
    if not path.is_file():
        return []
    return [f"![{caption}]({Path(os.path.relpath(path, readme_dir)).as_posix()})", ""]


def readme_block(study: dict, report_dir: Path, readme_dir: Path) -> str:
    """The markdown between :data:`BEGIN` and :data:`END` (markers included), from ``study`` (the ``study.json`` in
    ``report_dir``); links are relative to ``readme_dir``."""
    rel = Path(os.path.relpath(report_dir, readme_dir)).as_posix()
    t = study["time"]
    lines = [BEGIN,
             f"From [`{rel}/{STUDY_JSON}`]({rel}/{STUDY_JSON}), written by `{study['meta']['command']}`: "
             f"{t['runs_finished']} of {t['runs_planned']} planned runs finished, "
             f"{format_duration(t['train_s'])} of training"
             f"{' so far' if t['runs_finished'] < t['runs_planned'] else ''}. "
             "Cells read \"mean ± sample standard deviation (number of seeds)\"; the last column applies the study's "
             f"difference rule to the first metric. Every table and figure is in [`{rel}/{REPORT_NAME}`]"
             f"({rel}/{REPORT_NAME}).", ""]
    p1 = _table(study, "problem1", P1_FAMILY, P1_METRICS)
    if p1:
        lines += ["**Problem 1**, validation AP of the best-validation-loss checkpoint:", "", *p1, ""]
        lines += _figure(report_dir, readme_dir, FIGURES["p1_map50"], "mAP@0.5 per problem-1 experiment")
        run = first_run(study, P1_FAMILY_REFERENCE)
        if run is not None:
            lines += _figure(report_dir, readme_dir, f"{run['dir']}/visualizations/scale_specialisation.png",
                             f"Which scale finds which objects (`{P1_FAMILY_REFERENCE}`, seed {run['seed']})")
    p2 = _table(study, "problem2", P2_FAMILY, P2_METRICS, _ceiling_rows(study))
    if p2:
        lines += ["**Problem 2**, validation PCK of the best-validation-loss checkpoint:", "", *p2, ""]
        pair = next(iter(study["pairs"]), None)
        if pair is not None:
            lines += _figure(report_dir, readme_dir, f"{pair['dir']}/figures/pck_curves.png",
                             f"PCK curves of the specified pair and the hand-ambiguity ceiling (seed {pair['seed']})")
    lines += _run_times(study)
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
    text = readme.read_text(encoding="utf-8")
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
