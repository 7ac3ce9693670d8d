"""``made-sample``: draw samples from a trained run and save them as a PNG grid or as arrays.

Usage:
    made-sample logs/train/runs/<run> --num-samples 100              # writes <run>/samples_seed0_n100.png
    made-sample logs/train/runs/<run> --out grid.png --overwrite     # replace an existing grid.png
    made-sample logs/train/runs/<run> --out samples.npy              # (N, D) uint8 array of 0/1
    made-sample logs/train/runs/<run> --out samples.npz              # samples, and log_prob: (N,) nats under the
                                                                     # mixture they were drawn from
An existing output file (the training's samples.png included) is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import mask_log_probs, mixture_log_prob, select_masks
from made_exp.errors import UserError, exit_on_user_error
from made_exp.lightning.loading import load_run
from made_exp.runs.atomic import replace_atomically
from made_exp.runs.images import save_sample_grid
from made_exp.runs.run_status import warn_if_unfinished
from made_exp.runs.rundir import RunDir

__all__ = ["OUTPUT_SUFFIXES", "main", "save_samples"]

OUTPUT_SUFFIXES = (".png", ".npy", ".npz")


def save_samples(samples: torch.Tensor, log_prob: torch.Tensor | None, path: Path) -> Path:
    """samples: (N, D) in {0,1}; log_prob: (N,) nats, for ``.npz``. A PNG grid, an ``.npy`` array of the samples
    (uint8), or an ``.npz`` holding ``samples`` and ``log_prob``; the arrays are written whole or not at all."""
    if path.suffix == ".png":
        return save_sample_grid(samples, path)
    arrays = {"samples": samples.detach().cpu().numpy().astype(np.uint8)}
    if path.suffix == ".npz":
        arrays["log_prob"] = log_prob.detach().cpu().numpy()

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:  # a file object: np.save would add .npy to a temporary's name
            np.save(file, arrays["samples"]) if path.suffix == ".npy" else np.savez(file, **arrays)

    replace_atomically(path, write)
    return path


def _checked_output(out: Path, num_samples: int, overwrite: bool) -> None:
    if num_samples < 1:
        raise UserError(f"--num-samples {num_samples}: draw at least 1 sample")
    if out.suffix not in OUTPUT_SUFFIXES:
        raise UserError(
            f"--out {out}: unknown output type {out.suffix or '(none)'!r}; use .png (a grid), .npy (the samples) "
            "or .npz (the samples and their log-probabilities)"
        )
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it, or --out for another file")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-sample", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run directory")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument(
        "--num-masks", type=int, default=None, help="mixture components (default: the run's test ensemble)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    parser.add_argument(
        "--out",
        type=Path,
        help="a .png grid, .npy samples or .npz samples and log_prob (default: RUN_DIR/samples_seed<SEED>_n<N>.png)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(argv)
    out = args.out or RunDir(args.run_dir).drawn_samples(args.seed, args.num_samples)
    with exit_on_user_error("made-sample"):
        _checked_output(out, args.num_samples, args.overwrite)
        cfg, _, module, _ = load_run(args.run_dir, checkpoint=args.checkpoint)
        warn_if_unfinished("made-sample", args.run_dir, args.checkpoint)
    num_masks = args.num_masks or cfg.ensemble.get("num_masks")
    masks = select_masks(module.model, num_masks, cfg.ensemble.get("mask_source", "bank"), args.seed)
    samples = sample_mixture(module.model, masks, args.num_samples, torch.Generator().manual_seed(args.seed))
    log_prob = mixture_log_prob(mask_log_probs(module.model, samples, masks)) if out.suffix == ".npz" else None
    print(save_samples(samples, log_prob, out))


if __name__ == "__main__":
    main()
