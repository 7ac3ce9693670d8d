"""Which masks a training step uses, and the objective over them (``conf/masks/``).

Connectivity-agnostic training (Germain et al., 2015, Sec. 4.2) picks a mask per
minibatch. With ``samples_per_step = S`` masks per minibatch, the ``nll`` objective
is ``E_s[-log p_s(x)]`` and ``mixture`` is ``-log (1/S) sum_s p_s(x)``; by Jensen the
latter is the tighter bound on the NLL of the mixture of masks.

Two objectives train the model that is tested, over all K bank masks every step (``made_exp.core.objectives``):
``poe``, the NLL of the normalised product of experts, and ``learned_mixture``, the NLL of ``sum_k w_k p_k(x)``
with the weights trained too. ``poe`` gets log Z and its gradient from ``log_z``: ``exact`` (enumeration),
``importance`` (fresh mixture samples each step), ``smc`` (persistent weighted particles, ``core.smc``) or
``nce`` (noise-contrastive estimation with a learned log Z, ``core.nce``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from made_exp.core.choices import WHOLE_BANK_OBJECTIVES
from made_exp.core.made import MADE, Mask
from made_exp.core.nce import NoiseContrastiveLogZ
from made_exp.core.objectives import MixtureWeights, learned_mixture_loss, poe_loss
from made_exp.core.smc import ParticleLogZ

__all__ = ["MaskSchedule"]


class MaskSchedule:
    """Training-time mask choice.

    Args:
        schedule: ``cycle`` walks through the model's K bank masks, one per minibatch
            (K = 1 is the single-mask MADE); ``fresh`` draws a new mask every minibatch
            (K = infinity), varying what the model's ``resample`` says.
        objective: ``nll``, ``mixture``, ``poe`` or ``learned_mixture`` (see module docstring).
        samples_per_step: S, masks per minibatch (``nll`` and ``mixture``).
        val_num_masks: masks in the validation mixture (bank masks for ``cycle``;
            the same fixed fresh masks every epoch for ``fresh``).
        log_z: ``poe``: ``exact`` (enumerates 2^D states: small D only), ``importance``, ``smc`` or ``nce``.
        log_z_samples: ``poe``: mixture samples per step (``importance``), particles (``smc``), or, with
            ``nce``, unused (it draws ``noise_ratio`` x B noise samples).
        alpha: ``learned_mixture``: symmetric Dirichlet prior on the weights (>= 1; 1 = none).
        smc: ``ParticleLogZ``'s ``resample_below``, ``mh_steps``, ``gibbs_sweeps``.
        nce: ``NoiseContrastiveLogZ``'s ``noise_ratio``, ``refresh_steps``.
        val_log_z: ``poe``: how validation estimates log Z each epoch, as ``ProductOfExperts.log_z_method``:
            ``auto`` (exact for D <= 20, else importance with ``log_z_samples``), ``exact``, ``importance``, or
            ``ais`` (``val_ais_chains`` chains, ``val_ais_temperatures`` temperatures).
    """

    def __init__(
        self,
        schedule: str = "cycle",
        objective: str = "nll",
        samples_per_step: int = 1,
        val_num_masks: int = 1,
        log_z: str = "exact",
        log_z_samples: int = 1000,
        alpha: float = 1.0,
        smc: Mapping | None = None,
        nce: Mapping | None = None,
        val_log_z: str = "auto",
        val_ais_chains: int = 200,
        val_ais_temperatures: int = 50,
    ):
        self.schedule, self.objective = schedule, objective
        self.samples_per_step, self.val_num_masks = samples_per_step, val_num_masks
        self.log_z, self.log_z_samples, self.alpha = log_z, log_z_samples, alpha
        self.smc, self.nce = dict(smc or {}), dict(nce or {})
        self.val_log_z, self.val_ais_chains, self.val_ais_temperatures = val_log_z, val_ais_chains, val_ais_temperatures

    def mixture_weights(self, model: MADE) -> MixtureWeights | None:
        """The trainable mixture weights the ``learned_mixture`` objective needs (None for the others)."""
        return MixtureWeights(model.num_masks, self.alpha) if self.objective == "learned_mixture" else None

    def log_z_estimator(self, model: MADE) -> ParticleLogZ | NoiseContrastiveLogZ | None:
        """The state the ``poe`` objective's ``smc`` or ``nce`` estimator keeps between steps (None otherwise)."""
        if self.objective != "poe":
            return None
        if self.log_z == "smc":
            return ParticleLogZ(model.input_dim, self.log_z_samples, **self.smc)
        if self.log_z == "nce":
            return NoiseContrastiveLogZ(model, **self.nce)
        return None

    def uses_one_mask(self, model: MADE) -> bool:
        """Whether every training step uses the same mask (bank mask 0 of a K = 1 bank)."""
        return self.schedule == "cycle" and model.num_masks == 1

    def training_masks(self, model: MADE, step: int) -> list[Mask | int]:
        """The S masks (bank indices or fresh masks) for optimisation step ``step``."""
        if self.objective in WHOLE_BANK_OBJECTIVES:
            return list(range(model.num_masks))
        first = step * self.samples_per_step
        if self.schedule == "cycle":
            return [(first + s) % model.num_masks for s in range(self.samples_per_step)]
        return [model.draw_mask() for _ in range(self.samples_per_step)]

    def loss(
        self,
        model: MADE,
        x: Tensor,
        masks: list[Mask | int],
        weights: MixtureWeights | None = None,
        generator: torch.Generator | None = None,
        num_examples: int | None = None,
        estimator: ParticleLogZ | NoiseContrastiveLogZ | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """x: (B, D) -> (scalar training loss in nats per example, stats to log).

        ``weights``: the ``learned_mixture`` objective's; ``generator``: the ``poe`` samplers';
        ``num_examples``: the training set's size, which scales the weights' prior to a per-example loss;
        ``estimator``: ``log_z_estimator(model)``, for ``poe`` with ``smc`` or ``nce``.
        """
        if self.objective == "poe":
            return poe_loss(model, x, masks, self.log_z, self.log_z_samples, generator, estimator=estimator)
        if self.objective == "learned_mixture":
            return learned_mixture_loss(model, weights, x, num_examples=num_examples)
        per_mask = []
        for mask in masks:
            model.set_mask(mask)
            per_mask.append(model.log_prob(x))
        log_probs = torch.stack(per_mask)  # (S, B)
        if self.objective == "mixture":
            return -(torch.logsumexp(log_probs, 0) - math.log(len(masks))).mean(), {}
        return -log_probs.mean(), {}

    def validation_mask_source(self) -> str:
        return "bank" if self.schedule == "cycle" else "fresh"
