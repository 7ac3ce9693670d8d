"""``made-sample``: draw samples from a trained run and save them as a PNG grid.

Usage:
    made-sample logs/train/runs/<run> --num-samples 100              # writes <run>/samples_seed0_n100.png
    made-sample logs/train/runs/<run> --out grid.png --overwrite     # replace an existing grid.png
An existing output file (the training's samples.png included) is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import select_masks
from made_exp.errors import UserError, exit_on_user_error
from made_exp.lightning.loading import load_run
from made_exp.runs.images import save_sample_grid
from made_exp.runs.rundir import RunDir

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-sample", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run directory")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument(
        "--num-masks", type=int, default=None, help="mixture components (default: the run's test ensemble)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/samples_seed<SEED>_n<NUM_SAMPLES>.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(argv)
    out = args.out or RunDir(args.run_dir).drawn_samples(args.seed, args.num_samples)
    with exit_on_user_error("made-sample"):
        if out.exists() and not args.overwrite:
            raise UserError(f"{out} exists; pass --overwrite to replace it, or --out for another file")
        cfg, _, module, _ = load_run(args.run_dir, checkpoint=args.checkpoint)
    num_masks = args.num_masks or cfg.ensemble.get("num_masks")
    masks = select_masks(module.model, num_masks, cfg.ensemble.get("mask_source", "bank"), args.seed)
    samples = sample_mixture(module.model, masks, args.num_samples, torch.Generator().manual_seed(args.seed))
    print(save_sample_grid(samples, out))


if __name__ == "__main__":
    main()
