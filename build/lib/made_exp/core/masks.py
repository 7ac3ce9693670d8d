"""Which masks a training step uses, and the objective over them (``conf/masks/``).

Connectivity-agnostic training (Germain et al., 2015, Sec. 4.2) picks a mask per
minibatch. With ``samples_per_step = S`` masks per minibatch, the ``nll`` objective
is ``E_s[-log p_s(x)]`` and ``mixture`` is ``-log (1/S) sum_s p_s(x)``; by Jensen the
latter is the tighter bound on the NLL of the mixture of masks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from made_exp.core.made import MADE, Mask

__all__ = ["MaskSchedule", "SCHEDULES", "OBJECTIVES"]

SCHEDULES = ("cycle", "fresh")
OBJECTIVES = ("nll", "mixture")


class MaskSchedule:
    """Training-time mask choice.

    Args:
        schedule: ``cycle`` walks through the model's K bank masks, one per minibatch
            (K = 1 is the single-mask MADE); ``fresh`` draws a new mask every minibatch
            (K = infinity), varying what the model's ``resample`` says.
        objective: ``nll`` or ``mixture`` (see module docstring).
        samples_per_step: S, masks per minibatch.
        val_num_masks: masks in the validation mixture (bank masks for ``cycle``;
            the same fixed fresh masks every epoch for ``fresh``).
    """

    def __init__(
        self, schedule: str = "cycle", objective: str = "nll", samples_per_step: int = 1, val_num_masks: int = 1
    ):
        self.schedule, self.objective = schedule, objective
        self.samples_per_step, self.val_num_masks = samples_per_step, val_num_masks

    def uses_one_mask(self, model: MADE) -> bool:
        """Whether every training step uses the same mask (bank mask 0 of a K = 1 bank)."""
        return self.schedule == "cycle" and model.num_masks == 1

    def training_masks(self, model: MADE, step: int) -> list[Mask | int]:
        """The S masks (bank indices or fresh masks) for optimisation step ``step``."""
        first = step * self.samples_per_step
        if self.schedule == "cycle":
            return [(first + s) % model.num_masks for s in range(self.samples_per_step)]
        return [model.draw_mask() for _ in range(self.samples_per_step)]

    def loss(self, model: MADE, x: Tensor, masks: list[Mask | int]) -> Tensor:
        """x: (B, D) -> scalar training loss in nats per example."""
        per_mask = []
        for mask in masks:
            model.set_mask(mask)
            per_mask.append(model.log_prob(x))
        log_probs = torch.stack(per_mask)  # (S, B)
        if self.objective == "mixture":
            return -(torch.logsumexp(log_probs, 0) - math.log(len(masks))).mean()
        return -log_probs.mean()

    def validation_mask_source(self) -> str:
        return "bank" if self.schedule == "cycle" else "fresh"
