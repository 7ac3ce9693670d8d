"""Matplotlib figures written atomically as PNG (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

from pathlib import Path

from made_exp.runs.atomic import replace_atomically

__all__ = ["save_figure", "subplots"]


def save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    replace_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)


def subplots(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, count, figsize=(5 * count, 4), squeeze=False)
    return figure, axes[0]
