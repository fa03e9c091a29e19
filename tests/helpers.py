"""Helpers shared by the test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
from __future__ import annotations

from common.errors import run_cli


def run_main(main, argv: list[str]) -> int:
    """Run a script's ``main`` in-process as its ``__main__`` does; returns the exit status."""
    try:
        run_cli(lambda: main(argv))
    except SystemExit as e:
        return int(e.code or 0)
    return 0
