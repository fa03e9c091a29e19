"""Matplotlib without a display: every figure of both problems is drawn off-screen (Agg)."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported only when a figure is drawn (keeps imports fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
