"""Combining the K autoregressive models of one MADE (one per mask) at evaluation time.

The maths is in small functions over a ``(K, N)`` tensor of per-mask log-probabilities;
a strategy object (``conf/ensemble/``) picks the masks, fits what needs fitting on
held-out data (``prepare``) and scores a batch (``log_prob``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from made_exp.made import MADE, Mask

__all__ = ["mask_log_probs", "mixture_log_prob", "select_masks", "Mixture"]


@torch.no_grad()
def mask_log_probs(model: MADE, x: Tensor, masks: Sequence[Mask]) -> Tensor:
    """x: (N, D) -> (K, N) log p_k(x) in nats, one full-batch pass per mask (GEMM-bound, no per-example loop)."""
    previous = model.current_mask
    try:
        rows = []
        for mask in masks:
            model.set_mask(mask)
            rows.append(model.log_prob(x))
        return torch.stack(rows)
    finally:
        model.set_mask(previous)


def mixture_log_prob(log_probs: Tensor, log_weights: Tensor | None = None) -> Tensor:
    """(K, N) per-mask log p_k(x) -> (N,) log sum_k w_k p_k(x); uniform weights 1/K when none are given."""
    if log_weights is None:
        return torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])
    return torch.logsumexp(log_probs + log_weights[:, None], dim=0)


def select_masks(model: MADE, num_masks: int | None, source: str, seed: int) -> list[Mask]:
    """The masks an ensemble combines: the first ``num_masks`` of the bank (all when None),
    or ``num_masks`` fresh ones drawn from a generator seeded with ``seed``."""
    if source == "bank":
        count = model.num_masks if num_masks is None else min(num_masks, model.num_masks)
        return [model.mask(k) for k in range(count)]
    if source == "fresh":
        if num_masks is None:
            raise ValueError("ensemble.mask_source=fresh needs ensemble.num_masks")
        generator = torch.Generator().manual_seed(seed)
        return [model.draw_mask(generator) for _ in range(num_masks)]
    raise ValueError(f"ensemble.mask_source={source!r} is not one of bank, fresh")


class Mixture:
    """Uniform mixture (1/K) sum_k p_k(x) over masks: the paper's test NLL."""

    name = "mixture"
    normalised = True

    def __init__(self, num_masks: int | None = None, mask_source: str = "bank", seed: int = 1234):
        self.num_masks, self.mask_source, self.seed = num_masks, mask_source, seed
        self.masks: list[Mask] = []

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks; returns scalars to log."""
        self.masks = select_masks(model, self.num_masks, self.mask_source, self.seed)
        return {"num_masks": float(len(self.masks))}

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"log_prob": (B,), "mask_log_probs": (K, B)} in nats."""
        per_mask = mask_log_probs(model, x, self.masks)
        return {"log_prob": mixture_log_prob(per_mask), "mask_log_probs": per_mask}
