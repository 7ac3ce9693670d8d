"""Matplotlib figures written atomically as PNG (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from made_exp.runs.atomic import replace_atomically

__all__ = ["save_figure", "subplots", "legend_below"]

_LEGEND_WIDTH = 50  # characters per line of a legend entry


def save_figure(figure, path: Path) -> None:
    """Write ``figure`` as a PNG, the saved area grown to hold every title, label, tick and legend (none is cut)."""
    import matplotlib.pyplot as plt

    replace_atomically(
        path, lambda temporary: figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight", pad_inches=0.1)
    )
    plt.close(figure)


def legend_below(ax, **kwargs) -> None:
    """The legend of ``ax`` under its x label, entries wrapped, so it covers neither the data nor the axis labels."""
    handles, labels = ax.get_legend_handles_labels()
    wrapped = [textwrap.fill(label, _LEGEND_WIDTH) for label in labels]
    ax.legend(handles, wrapped, loc="upper center", bbox_to_anchor=(0.5, -0.25), **kwargs)


def subplots(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, count, figsize=(5 * count, 4), squeeze=False)
    return figure, axes[0]
