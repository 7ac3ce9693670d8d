"""How the PoE objective's importance-sampled log Z behaves during training: the per-epoch estimate and its
effective sample fraction (ESS/S), read from each ``masks=poe_objective`` run's CSV log.

    python experiments/objectives_uci/collapse.py experiments/objectives_uci/poe_objective_log_z.png <runs dir>...

One line per run, coloured by dataset, solid for K = 4 and dashed for K = 16; the table printed beside gives, per
run, ESS/S and log Z after epochs 1 and 10 and at the last epoch.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from made_exp.runs.records import epoch_rows, results_files  # noqa: E402

COLOURS = {"dna": "tab:blue", "mushrooms": "tab:green", "nips": "tab:red"}
LINES = {4: "-", 16: "--"}  # by K


def poe_objective_runs(roots: list[Path]) -> list[tuple[Path, dict]]:
    """(run dir, its config) of every finished ``masks=poe_objective`` run under ``roots``, sorted by K, then run."""
    configs = [(path.parent, json.loads(path.read_text())["config"]) for root in roots for path in results_files(root)]
    configs.sort(key=lambda run_config: (run_config[1]["model"]["num_masks"], str(run_config[0])))
    return [(run, config) for run, config in configs if config["masks"].get("objective") == "poe"]


def per_epoch(run: Path) -> tuple[list[int], list[float], list[float]]:
    """(epochs, log Z estimates, ESS/S) of ``run``, one entry per training epoch (1-based)."""
    rows = epoch_rows(run, "train/log_z")
    return (
        [int(row["epoch"]) + 1 for row in rows],
        [float(row["train/log_z"]) for row in rows],
        [float(row["train/effective_sample_fraction"]) for row in rows],
    )


def main(out: Path, roots: list[Path]) -> None:
    figure, (log_z_axis, ess_axis) = plt.subplots(1, 2, figsize=(11, 4))
    print("| run | K | samples S | ESS/S epoch 1 / 10 / last | log Z epoch 1 / 10 / last | epochs |")
    print("|---|---:|---:|---|---|---:|")
    for run, config in poe_objective_runs(roots):
        dataset, samples = config["data"]["name"], config["masks"]["log_z_samples"]
        epochs, log_z, fraction = per_epoch(run)
        num_masks = config["model"]["num_masks"]
        style = {"color": COLOURS.get(dataset, "grey"), "alpha": 0.7, "lw": 1, "ls": LINES[num_masks]}
        log_z_axis.plot(epochs, log_z, **style)
        ess_axis.plot(epochs, fraction, **style)
        picks = [0, min(9, len(epochs) - 1), len(epochs) - 1]
        print(
            f"| {run.name} | {num_masks} | {samples} | {' / '.join(f'{fraction[i]:.1%}' for i in picks)} | "
            f"{' / '.join(f'{log_z[i]:.1f}' for i in picks)} | {epochs[-1]} |"
        )
    for dataset, colour in COLOURS.items():
        log_z_axis.plot([], [], color=colour, label=dataset)
    for num_masks, line in LINES.items():
        log_z_axis.plot([], [], color="black", ls=line, lw=1, label=f"K = {num_masks}")
    log_z_axis.set(xlabel="epoch", ylabel="training log Z estimate (nats)", title="log Z by SNIS from the mixture")
    ess_axis.set(xlabel="epoch", ylabel="ESS / S", yscale="log", title="effective sample fraction")
    ess_axis.axhline(0.05, color="black", ls=":", lw=1, label="warning threshold (5%)")
    log_z_axis.legend()
    ess_axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(root) for root in sys.argv[2:]])
