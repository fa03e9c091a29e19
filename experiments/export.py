"""``--export DIR``: the committable copy of a study: ``REPORT.md``, ``study.json``, exactly the PNGs that
``REPORT.md`` links and the runs' own PNGs its multi-panel figures are drawn from (so a study continued from the
export draws them again), at the same relative paths, each downscaled with Pillow until it is at most
:data:`MAX_FIGURE_BYTES`. Nothing else: no checkpoints, logs or other figures."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image

from common.errors import UserError
from common.io import atomic_write_bytes, is_inside
from experiments.aggregate import refuse_fewer
from experiments.figures import panel_sources
from experiments.report import REPORT_NAME

MAX_FIGURE_BYTES = 1_000_000
TOTAL_BUDGET_BYTES = 5_000_000  # what the issue allows a committed report; exceeding it is reported, not refused
STUDY_JSON = "study.json"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+\.png)\)")


def linked_figures(report: str) -> list[str]:
    """The relative PNG paths ``report`` links (images and plain links), each once, in order."""
    return list(dict.fromkeys(LINK.findall(report)))


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def shrink_png(src: Path, max_bytes: int = MAX_FIGURE_BYTES) -> bytes:
    """``src``'s bytes if small enough, else the image re-encoded and downscaled (area shrinks with the excess) until
    it fits."""
    raw = src.read_bytes()
    if len(raw) <= max_bytes:
        return raw
    with Image.open(src) as im:
        image = im.convert("RGBA") if im.mode in ("P", "LA") else im.copy()
    data = _png_bytes(image)
    while len(data) > max_bytes:
        scale = max(0.5, min(0.9, (max_bytes / len(data)) ** 0.5))
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        if size == image.size:
            raise UserError(f"{src}: cannot be shrunk below {max_bytes} bytes")
        image = image.resize(size, Image.LANCZOS)
        data = _png_bytes(image)
    return data


def check_study(study: object, path: Path) -> dict:
    """``study`` if it has a study's shape (what the export and the README block read), else a one-line
    :class:`UserError` naming ``path`` and the field."""
    fields = {"meta": dict, "runs": list, "experiments": dict, "families": list, "findings": list, "time": dict}
    if not isinstance(study, dict):
        raise UserError(f"{path}: not a study.py study.json (a JSON {type(study).__name__})")
    for field, kind in fields.items():
        if not isinstance(study.get(field), kind):
            raise UserError(f"{path}: not a study.py study.json (field '{field}' missing or not a {kind.__name__})")
    return study


def export(results_dir: Path, out_dir: Path, replace: bool = False) -> dict:
    """Copy the study in ``results_dir`` to ``out_dir``; returns ``{'files': [...], 'bytes': total}``."""
    report_path, study_path = results_dir / REPORT_NAME, results_dir / STUDY_JSON
    for p in (report_path, study_path):
        if not p.is_file():
            raise UserError(f"--export: {p} not found (run the study, or --report-only, first)")
    if out_dir.resolve() == results_dir.resolve():
        raise UserError(f"--export {out_dir}: is the results folder itself")
    report = report_path.read_text()
    try:
        study = json.loads(study_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"--export: {study_path} is not readable JSON ({type(e).__name__})") from None
    check_study(study, study_path)  # before anything is written: a broken study must not replace a good export
    refuse_fewer(out_dir / STUDY_JSON, study, replace, "--export: ")
    sources = [rel for rel, _ in panel_sources(study) if (results_dir / rel).is_file()]
    figures = list(dict.fromkeys([*linked_figures(report), *sources]))
    for rel in figures:  # every link checked before anything is written
        src = results_dir / rel
        if Path(rel).is_absolute() or not is_inside(src, results_dir):
            raise UserError(f"{report_path}: links {rel}, outside the results folder")
        if not src.is_file():
            raise UserError(f"{report_path}: links {rel}, which does not exist")
    files = {REPORT_NAME: report.encode(), STUDY_JSON: study_path.read_bytes()}
    for rel in figures:
        files[rel] = shrink_png(results_dir / rel)
    for rel, data in files.items():
        atomic_write_bytes(out_dir / rel, data)
    total = sum(len(d) for d in files.values())
    stale = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()
                   and str(p.relative_to(out_dir)) not in files)
    return {"files": list(files), "bytes": total, "over_budget": total > TOTAL_BUDGET_BYTES, "stale": stale}

