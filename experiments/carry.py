"""``--continue-from DIR``: carry the finished runs of a committed study (``docs/report``) over into a results folder.

Why: the full study takes longer on a CPU than one working session, and a new machine starts with an empty results
folder. The committed report already holds, for every finished run, the entry ``study.json`` keeps (config identity,
precision, metrics, details, times, machine) and the PNGs its report links. A carried run is a folder holding
``carried.json`` (that entry and where it came from) and those PNGs, and nothing else: it counts as finished with the
numbers it had, is never retrained, and the report says how many runs were carried and from where.

A run is carried over only when all of these hold:

1. its folder here is missing or empty, so nothing here is ever replaced;
2. DIR's ``study.json`` has a finished run of the same experiment and seed;
3. that run's config identity (:func:`~experiments.registry.identity`) equals this study's.

A carried run keeps the precision it was trained in, even where this machine would train in another (a CPU without
native bf16, say): it is never lost. What may not happen is an experiment whose seeds mix precisions, or two
compared experiments in different precisions, so training a run in another precision than those is refused before any
work (:func:`~experiments.runner.precision_conflicts`).

A pair evaluation is carried over when every one of its members is a carried run (its figures need the members'
models, which a carried run does not have).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from common.errors import UserError
from common.io import atomic_write_json, is_inside
from experiments.registry import PairRun, Run, identity
from experiments.runner import CARRIED_FILE, differences, is_carried

STUDY_JSON = "study.json"


def load_source(source: Path) -> dict:
    """``SOURCE/study.json``, or a one-line :class:`UserError`."""
    path = source / STUDY_JSON
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise UserError(f"--continue-from {source}: {STUDY_JSON} is nested too deeply to be a study") from None
    except FileNotFoundError:
        raise UserError(f"--continue-from {source}: holds no {STUDY_JSON} (pass a folder written by "
                        "`study.py --export`)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--continue-from {source}: {STUDY_JSON} is not readable JSON ({e})") from None
    if not isinstance(study, dict) or not isinstance(study.get("runs"), list):
        raise UserError(f"--continue-from {source}: {STUDY_JSON} is not a study.py study.json")
    return study


def _empty(d: Path) -> bool:
    return not d.exists() or (d.is_dir() and not any(d.iterdir()))


def inside(source: Path, rel: object, where: str) -> Path:
    """``source / rel`` for a relative path that stays inside ``source`` once resolved; else a one-line
    :class:`UserError` naming ``where`` (a crafted study.json must not copy files from anywhere on the machine)."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise UserError(f"{where}: {rel!r} is not a relative folder inside {source}")
    path = source / rel
    if not is_inside(path, source):
        raise UserError(f"{where}: {rel!r} leads outside {source}")
    return path


def _copy_pngs(src: Path, dst: Path) -> int:
    """Every PNG under ``src`` to the same relative path under ``dst``; returns how many. Symbolic links are not
    followed (``rglob`` does not enter linked folders; linked files are skipped): they could point anywhere."""
    n = 0
    for png in sorted(src.rglob("*.png")) if src.is_dir() and not src.is_symlink() else []:
        if png.is_symlink() or not png.is_file():
            continue
        target = dst / png.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
        n += 1
    return n


def carry_over(source: Path, runs: list[Run], pairs: list[PairRun]) -> dict:
    """Carry ``source``'s finished runs and pairs that match (module docstring) into their folders here.

    Returns ``{'runs': [names carried], 'pairs': [names carried], 'refused': ['name: why', ...]}``; a run that
    ``source`` does not hold, or that is already here, is neither carried nor refused.
    """
    study = load_source(source)
    entries = {(e.get("experiment"), e.get("seed")): e for e in study["runs"] if isinstance(e, dict)}
    pairs_doc = study.get("pairs") or []
    pair_entries = {(e.get("pair"), e.get("seed")): e for e in (pairs_doc if isinstance(pairs_doc, list) else [])
                    if isinstance(e, dict)}
    where = f"--continue-from {source / STUDY_JSON}"
    for e in [*entries.values(), *pair_entries.values()]:  # every folder checked before anything is copied
        inside(source, e.get("dir"), f"{where}: {e.get('experiment') or e.get('pair')}/seed{e.get('seed')}: dir")
    carried, carried_pairs, refused = [], [], []
    for run in runs:
        entry = entries.get((run.experiment, run.seed))
        if entry is None or not _empty(run.dir):
            continue
        wanted = identity(run.problem, dataclasses.asdict(run.config))
        if entry.get("config") != wanted:
            refused.append(f"{run.name}: its config differs ({differences(entry.get('config') or {}, wanted)})")
            continue
        _copy_pngs(source / entry["dir"], run.dir)
        record = {"source": str(source), "entry": entry}
        if run.problem == "problem2" and not run.config.canonical_hands and study.get("ceiling"):
            record["ceiling"] = study["ceiling"]  # the validation labels' ceiling, which a run's metrics.json held
        atomic_write_json(run.dir / CARRIED_FILE, record)  # last: it marks the run finished
        carried.append(run.name)
    for pair in pairs:
        entry = pair_entries.get((pair.pair, pair.seed))
        if entry is None or not _empty(pair.dir) or not all(is_carried(m.dir) for m in pair.members.values()):
            continue
        _copy_pngs(source / entry["dir"], pair.dir)
        atomic_write_json(pair.dir / CARRIED_FILE, {"source": str(source), "entry": entry})
        carried_pairs.append(pair.name)
    return {"runs": carried, "pairs": carried_pairs, "refused": refused}

