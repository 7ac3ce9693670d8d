"""Samples as a PNG grid."""

from __future__ import annotations

import math
from pathlib import Path

import torchvision
from torch import Tensor

__all__ = ["save_sample_grid"]


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
