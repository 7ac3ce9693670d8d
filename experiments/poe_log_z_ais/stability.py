"""log Z of a trained bank's product of experts by importance sampling and by AIS as T grows, with wall times.

    OMP_NUM_THREADS=1 python experiments/poe_log_z_ais/stability.py <run dir> [--samples 10000] \
        [--chains 1000] [--temperatures 10 100 1000] [--schedule linear]

Every estimate is ``ProductOfExperts.prepare`` (ensemble=poe) on the run's best checkpoint, seed 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from made_exp.core.ensemble import ProductOfExperts
from made_exp.lightning.loading import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run dir with a bank of masks")
    parser.add_argument("--samples", type=int, nargs="*", default=[10000], help="importance samples, S values")
    parser.add_argument("--chains", type=int, default=1000, help="AIS chains")
    parser.add_argument("--temperatures", type=int, nargs="*", default=[10, 100, 1000], help="AIS T values")
    parser.add_argument("--schedule", default="linear", help="AIS schedule: linear | sigmoid")
    args = parser.parse_args()
    _, _, module, _ = load_run(args.run_dir)
    model = module.model.eval()
    settings = {
        f"importance, S = {num_samples}": {"log_z_method": "importance", "num_importance_samples": num_samples}
        for num_samples in args.samples
    }
    for num_temperatures in args.temperatures:
        settings[f"AIS {args.schedule}, C = {args.chains}, T = {num_temperatures}"] = {
            "log_z_method": "ais",
            "ais_chains": args.chains,
            "ais_temperatures": num_temperatures,
            "ais_schedule": args.schedule,
        }
    print(f"D = {model.input_dim}, K = {model.num_masks}, {torch.get_num_threads()} thread(s)")
    print("| method | log Z | stderr | ESS | wall s |\n|---|---:|---:|---:|---:|")
    for label, options in settings.items():
        started = time.perf_counter()
        with torch.no_grad():
            scalars = ProductOfExperts(seed=0, **options).prepare(model)
        seconds = time.perf_counter() - started
        ess = scalars.get("effective_sample_size")
        print(
            f"| {label} | {scalars['log_z']:.3f} | {scalars['log_z_stderr']:.3f} | "
            f"{'—' if ess is None else f'{ess:.0f}'} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
