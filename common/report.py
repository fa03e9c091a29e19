"""Generated reports, written once for both problems: markdown tables, number cells, NaN -> null for JSON."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def fmt(x: Any, digits: int = 3) -> str:
    """A number cell: ``x`` with ``digits`` decimals, ``'n/a'`` for ``None`` or NaN (a class without data)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub markdown table as lines (header, ``|---|`` rule, one line per row); cells are ``str()``-ed.

    Lines, not one string, so a report appends a table to its list of lines. Every row must have as many cells as
    the header: a short row would shift the columns under the wrong heading without any error in the rendering.
    """
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    out = [line(header), "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells for {len(header)} columns: {list(row)}")
        out.append(line(row))
    return out


def nan_to_none(obj: Any, drop_private: bool = False) -> Any:
    """``obj`` with every float NaN replaced by ``None``, through dicts, lists and tuples (tuples become lists).

    ``json.dump`` would write NaN as the bare token ``NaN``, which is not JSON; ``null`` is. With ``drop_private``,
    dict keys starting with ``_`` (arrays kept only for figures) are left out.
    """
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v, drop_private) for k, v in obj.items()
                if not (drop_private and str(k).startswith("_"))}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v, drop_private) for v in obj]
    return obj
