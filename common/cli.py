"""What every script does with its command line beyond parsing: record it re-runnably, check output folders."""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
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


def require_output_dir(path: str | Path, flag: str = "--results-dir", writable: bool = True) -> Path:
    """``path`` as a folder that outputs can be written into, or a one-line :class:`UserError` (exit status 2).

    It may not exist yet (it is created on the first write); but if it, or the nearest of its parents that exists,
    is a file, every later write would fail with a traceback (``FileExistsError`` / ``NotADirectoryError``), so
    this is checked before any work starts.
    """
    path = Path(path)
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (os.fsdecode's surrogates): JSON and reports need text
        raise UserError(f"{flag} {ascii(str(path))}: not a UTF-8 name; choose another") from None
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise UserError(f"{flag} {long[0][:40]}...: a name longer than the file system allows ({NAME_MAX} bytes)")
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"cannot be created: {p} is a file"
                raise UserError(f"{flag} {path}: {what}, not a folder")
            if writable and not _writable(p):
                raise UserError(f"{flag} {path}: cannot write into {p} (read-only or not a real folder)")
            return path
    return path


NAME_MAX = 255  # bytes in one file name on Linux's, macOS's and Windows' usual file systems


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried, since permissions do not tell (root passes every check,
    /proc and /sys refuse anyway, a read-only mount looks writable)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def require_resume_checkpoint(results_dir: str | Path, name: str = "last.pth") -> Path:
    """``RESULTS_DIR/last.pth`` for ``--resume``; a one-line :class:`UserError` when there is none to resume from.

    Both problems refuse the same way: silently starting from scratch would overwrite the results the user
    meant to continue, and a run that should have resumed would report numbers of a shorter training.
    """
    path = Path(results_dir) / name
    if not path.is_file():
        raise UserError(f"--resume: {path} not found, nothing to resume (run without --resume to start afresh)")
    return path
