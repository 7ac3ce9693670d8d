"""Validation NLL per epoch of the MNIST runs kept from the GPU run (runs/<sweep>_<job>/metrics.csv), one line per run:
how far each was from early stopping when its time ran out.

    python experiments/objectives_mnist/curves.py    # writes experiments/objectives_mnist/curves.png
"""

import csv
import json
from pathlib import Path

from made_exp.cli.compare import training_label
from made_exp.runs.figures import legend_below, save_figure, subplots

HERE = Path(__file__).parent


def label(config: dict) -> str:
    """made-compare's training label, with K for a bank: ``bank, Jensen, K = 4``."""
    name = training_label(config)
    return f"{name}, K = {config['model']['num_masks']}" if name.startswith("bank") else name


def main() -> None:
    figure, (ax,) = subplots(1)
    colours: dict[str, str] = {}
    for run in sorted((HERE / "runs").iterdir()):
        name = label(json.loads((run / "results.json").read_text())["config"])
        with open(run / "metrics.csv") as lines:
            rows = [row for row in csv.DictReader(lines) if row["val/nll"]]
        epochs, values = [int(row["epoch"]) + 1 for row in rows], [float(row["val/nll"]) for row in rows]
        first = name not in colours  # one legend entry per kind of run
        colour = colours.setdefault(name, f"C{len(colours)}")
        ax.plot(epochs, values, color=colour, label=name if first else None)
    ax.set(xlabel="epoch", ylabel="validation NLL (nats)", ylim=(90, 130),
           title="binarized MNIST, MADE 784-500-784, cut off after 5 min on an H200")
    ax.grid(alpha=0.3)
    legend_below(ax)
    figure.tight_layout()
    save_figure(figure, HERE / "curves.png")


if __name__ == "__main__":
    main()
