"""Each estimator's own log Z during training against AIS at its checkpoints: does the estimate drift?

For every PoE-objective run under the given dirs: the training log Z and the estimator's health (ESS/S, distinct
particles, classifier accuracy) at the first, the best and the last epoch, read from the run's CSV log, against
AIS (1000 chains, 100 temperatures, seed 0) at ``best.ckpt`` and ``last.ckpt``; and a figure of the training
log Z per epoch with the AIS values marked.

    OMP_NUM_THREADS=1 python experiments/poe_estimators/drift.py experiments/poe_estimators/dna_k4 <runs dir>/dna/k4
"""

import json
import sys
from pathlib import Path

import matplotlib
import torch
from omegaconf import OmegaConf

from made_exp.core.ais import poe_log_z_ais
from made_exp.lightning.loading import load_run
from made_exp.runs.records import epoch_rows, results_files

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEALTH = {"smc": "train/effective_sample_fraction", "importance": "train/effective_sample_fraction"}
HEALTH_NCE = "train/classifier_accuracy"
COLOURS = {"importance": "tab:orange", "smc": "tab:blue", "nce": "tab:green"}


def ais_log_z(run: Path, checkpoint: str) -> float:
    """AIS log Z of the run's product at ``checkpoint`` (best or last): 1000 chains, 100 temperatures."""
    _, _, module, _ = load_run(run, OmegaConf.create({"_target_": "made_exp.core.ensemble.Mixture"}), checkpoint)
    masks = [module.model.mask(k) for k in range(module.model.num_masks)]
    return poe_log_z_ais(module.model, masks, 1000, 100, generator=torch.Generator().manual_seed(0)).log_z


def main(out: Path, roots: list[Path]) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    print(
        "| run | estimator | seed | epochs | health epoch 1 / best / last | training log Z best / last "
        "| AIS log Z best / last | drift at last (training − AIS) |"
    )
    print("|---|---|---:|---:|---|---|---|---:|")
    for path in sorted(file for root in roots for file in results_files(root)):
        run, results = path.parent, json.loads(path.read_text())
        config, estimator = results["config"], results["config"]["masks"].get("log_z")
        if config["masks"].get("objective") != "poe":
            continue
        rows = epoch_rows(run, "train/log_z")
        log_z = [float(row["train/log_z"]) for row in rows]
        health_key = HEALTH_NCE if estimator == "nce" else HEALTH[estimator]
        health = [float(row[health_key]) for row in rows]
        best = min(range(len(rows)), key=lambda i: float(epoch_rows(run, "val/nll")[i]["val/nll"]))
        ais = [ais_log_z(run, "best"), ais_log_z(run, "last")]
        print(
            f"| {run.name[:2]}{estimator} | {estimator} | {config['seed']} | {len(rows)} "
            f"| {health[0]:.1%} / {health[best]:.1%} / {health[-1]:.1%} | {log_z[best]:.2f} / {log_z[-1]:.2f} "
            f"| {ais[0]:.2f} / {ais[1]:.2f} | {log_z[-1] - ais[1]:+.2f} |"
        )
        colour = COLOURS[estimator]
        axis.plot(range(1, len(log_z) + 1), log_z, color=colour, lw=1, alpha=0.8)
        axis.plot([best + 1, len(log_z)], ais, "o", color=colour, mfc="none")
    for estimator, colour in COLOURS.items():
        axis.plot([], [], color=colour, label=f"{estimator}: training log Z (circles: AIS at best, last)")
    axis.set(xlabel="epoch", ylabel="log Z (nats)", title="the estimators' log Z against AIS")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "drift.png", dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(root) for root in sys.argv[2:]])
