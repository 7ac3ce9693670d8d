"""``made-sample``: draw samples from a trained run and save them as a PNG grid.

Usage:
    made-sample logs/train/runs/<run> --num-samples 100 --out samples.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from made_exp.ensemble import select_masks
from made_exp.errors import exit_on_user_error
from made_exp.loading import load_run

__all__ = ["save_sample_grid", "main"]


def save_sample_grid(samples: Tensor, path: Path) -> Path:
    """samples: (N, D) in {0,1}. Square D (e.g. 784 = 28x28) become image tiles; other D
    become one row of pixels per sample."""
    samples = samples.detach().float().cpu()
    side = math.isqrt(samples.shape[1])
    if side * side == samples.shape[1]:
        images = samples.reshape(-1, 1, side, side)
        grid = torchvision.utils.make_grid(images, nrow=math.ceil(math.sqrt(len(images))), pad_value=0.5)
    else:
        grid = samples[None].repeat(3, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    from made_exp.sampling import sample_mixture

    parser = argparse.ArgumentParser(prog="made-sample", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run directory")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument(
        "--num-masks", type=int, default=None, help="mixture components (default: the run's test ensemble)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/samples.png)")
    args = parser.parse_args(argv)
    with exit_on_user_error("made-sample"):
        cfg, _, module = load_run(args.run_dir)
    num_masks = args.num_masks or cfg.ensemble.get("num_masks")
    masks = select_masks(module.model, num_masks, cfg.ensemble.get("mask_source", "bank"), args.seed)
    samples = sample_mixture(module.model, masks, args.num_samples, torch.Generator().manual_seed(args.seed))
    print(save_sample_grid(samples, args.out or args.run_dir / "samples.png"))


if __name__ == "__main__":
    main()
