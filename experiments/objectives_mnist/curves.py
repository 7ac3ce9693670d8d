"""Validation NLL per epoch of kept MNIST runs (<folder>/runs/<run>/metrics.csv), one line per run: how far each
was from early stopping when its time ran out, or where it stopped.

    python experiments/objectives_mnist/curves.py        # curves.png (the GPU run) and cpu_long/curves.png
"""

import csv
import json
import math
from pathlib import Path

from made_exp.cli.compare import training_label
from made_exp.runs.figures import legend_below, save_figure, subplots

HERE = Path(__file__).parent


def label(config: dict) -> str:
    """made-compare's training label, with K for a bank: ``bank, Jensen, K = 4``."""
    name = training_label(config)
    return f"{name}, K = {config['model']['num_masks']}" if name.startswith("bank") else name


def plot(folder: Path, title: str, ylim: tuple[float, float]) -> None:
    """``folder``/curves.png from ``folder``/runs/*/metrics.csv; a run that stopped early ends in a dot."""
    figure, (ax,) = subplots(1)
    colours: dict[str, str] = {}
    runs = {run: json.loads((run / "results.json").read_text()) for run in (folder / "runs").iterdir()}
    for run, results in sorted(runs.items(), key=lambda item: (item[1]["config"]["model"]["num_masks"], item[0].name)):
        name = label(results["config"])
        with open(run / "metrics.csv") as lines:
            rows = [row for row in csv.DictReader(lines) if row["val/nll"]]
        epochs, values = [int(row["epoch"]) + 1 for row in rows], [float(row["val/nll"]) for row in rows]
        first = name not in colours  # one legend entry per kind of run
        colour = colours.setdefault(name, f"C{len(colours)}")
        ax.plot(epochs, values, color=colour, label=name if first else None, lw=1)
        if results["stopped_by"] == "early_stopping":
            best = min(range(len(values)), key=lambda index: values[index] if math.isfinite(values[index]) else 1e9)
            ax.plot(epochs[best], values[best], "o", color=colour, ms=4)
    ax.set(xlabel="epoch", ylabel="validation NLL (nats)", ylim=ylim, title=title)
    ax.grid(alpha=0.3)
    legend_below(ax)
    figure.tight_layout()
    save_figure(figure, folder / "curves.png")


def main() -> None:
    plot(HERE, "binarized MNIST, MADE 784-500-784, cut off after 5 min on an H200", (90, 130))
    plot(HERE / "cpu_long", "binarized MNIST, 784-500-784, 2-core CPU (dot: best epoch, early stop)", (93, 105))


if __name__ == "__main__":
    main()
