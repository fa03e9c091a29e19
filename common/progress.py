"""Progress bars with an ETA (tqdm), quiet when output is not a terminal unless asked for."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it", leave: bool = False,
             **kwargs) -> tqdm:
    """A tqdm bar on stderr. ``PROGRESS=0`` turns bars off (CI logs), ``PROGRESS=1`` forces them on."""
    flag = os.environ.get("PROGRESS")
    disable = (flag == "0") or (flag is None and not sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable, dynamic_ncols=True,
                **kwargs)
