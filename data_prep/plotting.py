"""Matplotlib for figures written to files: the one place that selects the non-interactive Agg
backend (the package writes figures and never shows them, so it runs on servers without a
display) and imports pyplot, late, so that the commands' ``--help`` does not load it."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
