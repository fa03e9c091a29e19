"""What every script does with its command line beyond parsing: record it re-runnably, check output folders."""
from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError


def command_line(script: str, argv: Sequence[str] | None = None, drop: Sequence[str] = ()) -> str:
    """The command as a user re-types it: ``python SCRIPT ARGS``, shell-quoted (``shlex.join``).

    Args:
        script: path from the repository root, e.g. ``'problem1/train.py'``.
        argv: the arguments given to ``main`` (``None``: this process's ``sys.argv[1:]``).
        drop: flags without a value to leave out, e.g. ``('--resume',)`` where the command is printed as the
            base of a resume hint that appends ``--resume`` itself.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", script, *(a for a in args if a not in drop)])


def require_output_dir(path: str | Path, flag: str = "--results-dir") -> Path:
    """``path`` as a folder that outputs can be written into, or a one-line :class:`UserError` (exit status 2).

    It may not exist yet (it is created on the first write); but if it, or the nearest of its parents that exists,
    is a file, every later write would fail with a traceback (``FileExistsError`` / ``NotADirectoryError``), so
    this is checked before any work starts.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"cannot be created: {p} is a file"
                raise UserError(f"{flag} {path}: {what}, not a folder")
            return path
    return path


def require_resume_checkpoint(results_dir: str | Path, name: str = "last.pth") -> Path:
    """``RESULTS_DIR/last.pth`` for ``--resume``; a one-line :class:`UserError` when there is none to resume from.

    Both problems refuse the same way: silently starting from scratch would overwrite the results the user
    meant to continue, and a run that should have resumed would report numbers of a shorter training.
    """
    path = Path(results_dir) / name
    if not path.is_file():
        raise UserError(f"--resume: {path} not found, nothing to resume (run without --resume to start afresh)")
    return path
