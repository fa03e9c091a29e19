"""The appendix of ``REPORT.md``: what the body leaves out so that the answers stay readable. The experiments'
legend (each key and the flags it trains with), every experiment's further metrics (with the ranked metrics at the
last epoch beside the selected checkpoint), the false positives by cause, the data, the benchmarks and the
machines."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from common.report import fmt, markdown_table
from experiments.figures import FIGURES
from experiments.findings import RANKED
from experiments.progress import format_duration
from experiments.report_common import anchor, exp_cell, figure, first_run, results_table
from problem1.analysis import FP_KINDS
from problem1.config import CLASS_NAMES, FEATURE_MAP_SIZES

APPENDIX = {"legend": "Experiments", "p1": "Problem 1: more metrics", "fp": "False positives by cause",
            "p2": "Problem 2: more metrics", "data": "Data", "performance": "Performance",
            "machines": "Machines and training times"}


def machine_name(m: dict | None) -> str:
    if not m:
        return "not recorded"
    bf16 = {True: ", native bf16", False: ", no native bf16"}.get(m.get("native_bf16"), "")
    return f"{m['cpu']} ({m['cpu_count']} logical CPUs{bf16}), {m.get('gpu') or m['device']}"


RESULTS_DIR_FLAG = re.compile(r" --results-dir (?:'[^']*'|\S+)")
TRAIN_SCRIPT = re.compile(r"^python problem[12]/train\.py(?: |$)")


def _flags(command: str | None) -> str:
    """A training command as the legend shows it: its flags after ``python problemN/train.py`` (the key names the
    problem), without the ``--results-dir`` every run sets; another command whole."""
    if not command:
        return ""
    command = RESULTS_DIR_FLAG.sub("", command)
    if not TRAIN_SCRIPT.match(command):
        return f"`{command}`"
    flags = TRAIN_SCRIPT.sub("", command)
    return f"`{flags}`" if flags else "none (the specification)"


def _legend(study: dict) -> list[str]:
    # Every command names its own folder, RESULTS/study/<key>/seed<S>, and its script, problemN/train.py: said once
    # above the table, not in 22 rows.
    rows = [[exp_cell(study, k), _flags(e["train_command"])] for k, e in study["experiments"].items()]
    return [f"### {APPENDIX['legend']}", "",
            "Each run is `python problemN/train.py` (N from the key) with the flags shown, trained into "
            "`--results-dir RESULTS/study/<key>/seed<S>`, then `python problemN/evaluate.py --data-dir D --results-dir "
            "R`; the flags are the first seed's (others add `--seed S`).", "",
            *markdown_table(["key", "flags"], rows), ""]


def _selection_columns(study: dict, problem: str) -> tuple[list[str], dict[str, list[str]]]:
    """The metrics ``problem``'s methods are ranked by (:data:`~experiments.findings.RANKED`) at the selected
    checkpoint and at the last epoch, as columns of its more-metrics table: means over the runs whose training log the
    study read (a carried run keeps only its numbers), that number of runs first (0: none); no columns before any
    such run."""
    keys = [k for k, e in study["experiments"].items() if e["problem"] == problem]
    if not any((study["experiments"][k].get("last_epoch") or {}).get("seeds") for k in keys):
        return [], {}
    # Means only: the columns are read for the order of the experiments at each checkpoint; the spread and each run's
    # values are in study.json (``experiments.<key>.last_epoch``), and with five seeds "± std" would add ~150 words.
    metrics = RANKED[problem]
    h = {x["key"]: x["label"] for x in study["headline"][problem]}
    header = ["logged runs", *(f"{h[m]} {w}" for m in metrics for w in ("selected", "last"))]

    def cells(k: str) -> list[str]:
        last = study["experiments"][k].get("last_epoch") or {}
        if not last.get("seeds"):
            return ["0", *[""] * (len(header) - 1)]
        return [str(len(last["seeds"])), *(fmt(last[m][w]["mean"]) for m in metrics for w in ("selected", "last"))]

    return header, {k: cells(k) for k in keys}


SELECTION_NOTE = ("*selected*/*last*: means over the `logged runs` (whose training log the study read) at the "
                  "lowest-validation-loss checkpoint (the specification's) and at the last epoch.")


def _more_metrics(study: dict, problem: str, title: str, intro: str, more: Sequence[str],
                  note: str = SELECTION_NOTE) -> list[str]:
    keys = [k for k, e in study["experiments"].items() if e["problem"] == problem]
    if not keys:
        return []
    columns = _selection_columns(study, problem)
    return [f"### {title}", "", intro + (" " + note if columns[0] else ""), "",
            *results_table(study, problem, keys, more, columns=columns), ""]


def _p1(study: dict) -> list[str]:
    # The false positives over seeds are in study.json; the body shows the squares', this appendix their causes.
    more = ["map50_hidden_ignored", *(f"ap50_95_{c}" for c in CLASS_NAMES), "best_epoch"]
    return _more_metrics(study, "problem1", APPENDIX["p1"], "\"hidden ignored\": objects less than 10% visible count "
                         "as neither found nor missed.", more)


def _false_positives(study: dict, keys: Sequence[str] = ("p1-spec", "p1-dilation3")) -> list[str]:
    rows = []
    for k in keys:
        run = first_run(study, k)
        if run is None or not run.get("details"):
            continue
        for c, r in run["details"]["false_positives"]["per_class"].items():
            rows.append([f"`{k}`", c, r["total"], *(r["by_kind"][kind] for kind in FP_KINDS),
                         "/".join(str(r["by_scale"][f"scale{s + 1}"]) for s in range(len(FEATURE_MAP_SIZES))),
                         fmt(r["mislocalised_median_centre_offset"], 2), fmt(r["mislocalised_median_width_ratio"], 2)])
    if not rows:
        return []
    return [f"### {APPENDIX['fp']}", "",
            "Confident detections (score >= 0.5, first seed) matching no object at IoU 0.5, by cause: duplicate (IoU "
            ">= 0.5 with a found object), mislocalised (IoU 0.1-0.5), wrong class, background; by scale; for "
            "mislocalised boxes the median centre offset (object widths) and width ratio.", "",
            *markdown_table(["experiment", "class", "false", *FP_KINDS, "by scale 1/2/3", "offset", "width ratio"],
                            rows), ""]


def _p2(study: dict) -> list[str]:
    # PCK@0.05, PCK@0.2 and the mean error are in the body's tables, the methods' PCK curves in the overview figure;
    # every other number is in study.json. The selected/last columns are explained once, above problem 1's.
    said = bool(_selection_columns(study, "problem1")[0])
    return _more_metrics(study, "problem2", APPENDIX["p2"], "PCK@0.1 and 0.15, per-keypoint and hand-swap-invariant "
                         "PCK, spread and hand placement are in `study.json`.",
                         ["hands_pck@0.05", "best_epoch"],
                         f"*selected*/*last*: as in [{APPENDIX['p1']}]({anchor(APPENDIX['p1'])})." if said else
                         SELECTION_NOTE)


def _data(study: dict, results_dir: Path) -> list[str]:
    data = study.get("data") or {}
    lines = [f"### {APPENDIX['data']}", "", f"Generated by `generate_datasets.py` into `{data.get('data_dir', '?')}`.",
             ""]
    det = data.get("detection")
    if det:
        splits = det["splits"]
        rows = [[c, *(f"{splits[s]['classes'][c]['objects']} ({splits[s]['classes'][c]['hidden']})" for s in splits),
                 f"{splits['train']['classes'][c]['size_min']}-{splits['train']['classes'][c]['size_max']}"]
                for c in CLASS_NAMES]
        images = ", ".join(f"{s} {v['images']} images" for s, v in splits.items())
        lines += [f"Detection, 224x224 RGB ({images}; at most {splits['train']['objects_per_image_max']} objects per "
                  f"image); in brackets the objects less than {det['hidden_visibility_below']:g} visible:", "",
                  *markdown_table(["class", *(f"objects ({s})" for s in splits), "size (px, larger side)"], rows), "",
                  *figure(results_dir, FIGURES["data_detection"], "Detection training images with their boxes")]
    kp = data.get("keypoints")
    if kp:
        diag = ", ".join(f"{s} {fmt(v['keypoint_box_diagonal_mean'], 2)} px ({v['images']} images)"
                         for s, v in kp["splits"].items())
        names = ", ".join(kp["keypoint_names"] or [])
        lines += [f"Keypoints, 128x128 grayscale stick figures ({names}); mean keypoint box diagonal, the PCK "
                  f"reference length: {diag}.", "",
                  *figure(results_dir, FIGURES["data_keypoints"], "Keypoint training images with their labels")]
    return lines


def _steps(n: int) -> str:
    return f"{n} timed step{'' if n == 1 else 's'}"


def performance_section(study: dict) -> list[str]:
    benches = study.get("benches") or []
    lines = [f"### {APPENDIX['performance']}", ""]
    if not benches:
        return [*lines, "Not measured: no `bench.py` results (`--bench-json`) were found.", ""]
    rows, commands = [], []
    # threads and timed steps are said once when every file shares them; the batches are the specification's
    same = len({(b["meta"]["threads"], b["meta"]["steps"]) for b in benches}) == 1
    for i, bench in enumerate(benches, 1):
        meta = bench["meta"]
        # Files written before bench.py recorded its machine name only the architecture: say so, guess nothing.
        where = machine_name(meta["machine"]) if meta.get("machine") else \
            f"a machine the file does not name ({meta['device']}, `{meta.get('cpu', 'nothing')}`)"
        commands.append(f"{i}: `{meta['command']}` on {where}"
                        + ("" if same else f", {meta['threads']} threads, {_steps(meta['steps'])}"))
        rows += [[i, name, r["precision"], r["batch_size"], fmt(r["pure_model_step"]["images_per_s"], 1),
                  fmt(r["real_training_step"]["images_per_s"], 1), fmt(r["evaluation_val"]["images_per_s"], 1)]
                 for name, r in bench["results"].items()]
    each = f"; {benches[0]['meta']['threads']} threads, {_steps(benches[0]['meta']['steps'])} each" if same else ""
    lines += ["`bench.py`: the pure model step on random tensors, the real training step (data, targets, loss) and "
              "evaluation, in images per second; one block of rows per benchmark file (" + "; ".join(commands)
              + f"){each}.", "",
              *markdown_table(["file", "run", "precision", "batch", "pure step", "real step", "evaluation"], rows), ""]
    if study["meta"]["quick"]:
        lines += ["In quick mode the benchmark runs a single step on the small dataset: it shows that the path works, "
                  "not how fast it is.", ""]
    return lines


def _machines(study: dict) -> list[str]:
    meta, machine, total = study["meta"], study["meta"]["machine"], study["time"]
    rows = [[machine_name(g["machine"]), g["runs"], format_duration(g["train_s"]), format_duration(g["evaluate_s"])]
            for g in study.get("machines") or []]
    return [f"### {APPENDIX['machines']}", "",
            f"{format_duration(total['train_s'])} of training and {format_duration(total['evaluate_s'])} of "
            "evaluation, wall time summed over runs, by the machine that trained each:", "",
            *markdown_table(["machine", "runs", "training", "evaluation"], rows), "",
            f"This report was written on {machine['cpu']} ({machine['cpu_count']} logical CPUs"
            + (f", {machine['gpu']}" if machine.get("gpu") else "") + f"), {machine['platform']}, Python "
            f"{machine['python']}, " + ", ".join(f"{lib} {v}" for lib, v in machine["libraries"].items())
            + f"; precisions of the runs: {', '.join(meta['precisions']) or 'n/a'}.", ""]


def appendix_sections(study: dict, results_dir: Path) -> list[str]:
    return ["## Appendix", "", *_legend(study), *_p1(study), *_false_positives(study), *_p2(study),
            *_data(study, results_dir), *performance_section(study), *_machines(study)]
