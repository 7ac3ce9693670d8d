"""Combining the K autoregressive models of one MADE (one per mask) at evaluation time.

A strategy object (``conf/ensemble/``) picks the masks, fits what needs fitting on held-out
data (``prepare``) and scores a batch (``log_prob``); the maths is in ``made_exp.core.scoring``
and ``made_exp.core.normaliser``.

Strategies: ``Mixture`` (uniform, the paper's), ``LearnedMixture`` (EM weights),
``ProductOfExperts`` (normalised geometric mean), ``LogitAverage`` (unnormalised),
``BestSingle`` (the best mask on validation data).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from made_exp.core.ais import poe_log_z_ais
from made_exp.core.choices import POE_LOG_Z_METHODS
from made_exp.core.made import MADE, Mask, log_bernoulli
from made_exp.core.normaliser import poe_log_z_exact, poe_log_z_importance
from made_exp.core.scoring import (
    average_logits,
    effective_num_components,
    enumerate_log_probs,
    fit_mixture_weights,
    mask_log_probs,
    mixture_log_prob,
    product_log_prob,
    select_masks,
)

__all__ = ["Mixture", "LearnedMixture", "ProductOfExperts", "LogitAverage", "BestSingle"]


class Mixture:
    """Uniform mixture (1/K) sum_k p_k(x) over masks: the paper's test NLL."""

    name = "mixture"
    normalised = True

    def __init__(self, num_masks: int | None = None, mask_source: str = "bank", seed: int = 1234):
        self.num_masks, self.mask_source, self.seed = num_masks, mask_source, seed
        self.masks: list[Mask] = []
        self.log_weights: Tensor | None = None  # (K,) log w_k; None: uniform (set by a learned_mixture run)

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks; returns scalars to log."""
        self.masks = select_masks(model, self.num_masks, self.mask_source, self.seed)
        return {"num_masks": float(len(self.masks))}

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"log_prob": (B,), "mask_log_probs": (K, B)} in nats."""
        per_mask = mask_log_probs(model, x, self.masks)
        log_weights = None if self.log_weights is None else self.log_weights.to(per_mask)
        return {"log_prob": mixture_log_prob(per_mask, log_weights), "mask_log_probs": per_mask}


class LearnedMixture(Mixture):
    """Mixture sum_k w_k p_k(x) with weights fitted by (MAP-)EM on the validation split.

    ``alpha`` is a symmetric Dirichlet prior on the weights: 1 is maximum likelihood, < 1 prunes masks.
    """

    name = "learned_mixture"

    def __init__(
        self,
        num_masks: int | None = None,
        mask_source: str = "bank",
        seed: int = 1234,
        alpha: float = 1.0,
        max_iters: int = 200,
        tol: float = 1e-6,
    ):
        super().__init__(num_masks, mask_source, seed)
        self.alpha, self.max_iters, self.tol = alpha, max_iters, tol
        self.log_weights: Tensor | None = None

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks and fit (K,) weights on ``valid_x``; returns scalars to log."""
        if valid_x is None:
            raise ValueError("LearnedMixture fits its weights on validation data: pass valid_x")
        super().prepare(model)
        per_mask = mask_log_probs(model, valid_x, self.masks)
        self.log_weights, history = fit_mixture_weights(per_mask, self.alpha, self.max_iters, self.tol)
        return {
            "num_masks": float(len(self.masks)),
            "effective_num_masks": effective_num_components(self.log_weights),
            "num_nonzero_weights": float(self.log_weights.isfinite().sum()),
            "em_iterations": float(len(history) - 1),
        }

    @property
    def weights(self) -> Tensor:
        """(K,) fitted mixture weights, summing to 1."""
        return self.log_weights.exp()

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"log_prob": (B,)} in nats; masks with weight 0 are not evaluated."""
        active = torch.nonzero(self.log_weights.isfinite()).flatten().tolist()
        per_mask = mask_log_probs(model, x, [self.masks[k] for k in active])
        log_weights = self.log_weights[active].to(per_mask)
        return {"log_prob": mixture_log_prob(per_mask, log_weights)}


class ProductOfExperts(Mixture):
    """Normalised geometric mean prod_k p_k(x)^(1/K) / Z of the masks' models.

    log Z (``log_z_method``): ``exact`` enumerates all 2^D states; ``importance`` samples the uniform mixture;
    ``ais`` anneals from the mixture (``made_exp.core.ais``); ``auto`` is exact when D <= ``exact_max_dim``,
    else importance. Since Z <= 1, the NLL of "unnormalised_log_prob" (log of the geometric mean) bounds the
    true NLL above.
    """

    name = "poe"

    def __init__(
        self,
        num_masks: int | None = None,
        mask_source: str = "bank",
        seed: int = 1234,
        log_z_method: str = "auto",
        num_importance_samples: int = 10000,
        ais_chains: int = 1000,
        ais_temperatures: int = 100,
        ais_schedule: str = "linear",
        exact_max_dim: int = 20,
        chunk_size: int = 16384,
    ):
        if log_z_method not in POE_LOG_Z_METHODS:
            raise ValueError(f"log_z_method={log_z_method!r} is not one of {', '.join(POE_LOG_Z_METHODS)}")
        super().__init__(num_masks, mask_source, seed)
        self.log_z_method, self.num_importance_samples = log_z_method, num_importance_samples
        self.ais_chains, self.ais_temperatures, self.ais_schedule = ais_chains, ais_temperatures, ais_schedule
        self.exact_max_dim, self.chunk_size = exact_max_dim, chunk_size
        self.log_z = math.nan

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks and compute log Z with its standard error (0 when exact) and, by AIS, the effective
        sample size of the chains; returns scalars to log. Sampling methods draw from ``seed``."""
        super().prepare(model)
        method = self.log_z_method
        if method == "auto":
            method = "exact" if model.input_dim <= self.exact_max_dim else "importance"
        generator, ais_scalars = torch.Generator().manual_seed(self.seed), {}
        if method == "exact":
            self.log_z, stderr = poe_log_z_exact(model, self.masks, self.chunk_size), 0.0
        elif method == "importance":
            self.log_z, stderr = poe_log_z_importance(model, self.masks, self.num_importance_samples, generator)
        else:
            result = poe_log_z_ais(
                model, self.masks, self.ais_chains, self.ais_temperatures, self.ais_schedule, generator=generator
            )
            self.log_z, stderr = result.log_z, result.log_z_stderr
            ais_scalars = {"effective_sample_size": result.effective_sample_size}
        return {"num_masks": float(len(self.masks)), "log_z": self.log_z, "log_z_stderr": stderr, **ais_scalars}

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"log_prob": (B,) normalised, "unnormalised_log_prob": (B,) log GM} in nats."""
        log_gm = product_log_prob(mask_log_probs(model, x, self.masks))
        return {"log_prob": log_gm - self.log_z, "unnormalised_log_prob": log_gm}


class LogitAverage(Mixture):
    """Bernoulli likelihood of the logits averaged over masks. NOT a normalised distribution.

    Averaging logits breaks the autoregressive factorisation, so sum_x p(x) != 1: it returns
    only "unnormalised_log_prob" (logged as ``test/unnormalised_nll``), never a "log_prob"
    that could pass for a test NLL. ``log_total_mass`` (log sum_x p(x)) is reported when D <= ``exact_max_dim``.
    """

    name = "logit_average"
    normalised = False

    def __init__(
        self,
        num_masks: int | None = None,
        mask_source: str = "bank",
        seed: int = 1234,
        exact_max_dim: int = 20,
    ):
        super().__init__(num_masks, mask_source, seed)
        self.exact_max_dim = exact_max_dim

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks; for small D also the log total mass by enumeration. Returns scalars to log."""
        scalars = super().prepare(model)
        if model.input_dim <= self.exact_max_dim:
            weight = model.output.weight
            log_prob = self.unnormalised_log_prob(model)
            log_probs = enumerate_log_probs(log_prob, model.input_dim, weight.dtype, weight.device)
            scalars["log_total_mass"] = float(torch.logsumexp(log_probs, dim=0))
        return scalars

    def unnormalised_log_prob(self, model: MADE) -> Callable[[Tensor], Tensor]:
        """The function x: (N, D) -> (N,) log Bernoulli(x; sigmoid(mean_k logits_k(x))), in nats."""
        return lambda x: log_bernoulli(average_logits(model, x, self.masks), x)

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"unnormalised_log_prob": (B,)} in nats (see the class docstring)."""
        return {"unnormalised_log_prob": self.unnormalised_log_prob(model)(x)}


class BestSingle(Mixture):
    """The single mask with the best validation NLL; also returns every mask's log-probs for their spread."""

    name = "best_single"

    def __init__(self, num_masks: int | None = None, mask_source: str = "bank", seed: int = 1234):
        super().__init__(num_masks, mask_source, seed)
        self.best_mask = -1

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks and the best on ``valid_x``; returns scalars to log (validation NLLs in nats)."""
        if valid_x is None:
            raise ValueError("BestSingle picks its mask on validation data: pass valid_x")
        super().prepare(model)
        valid_nll = -mask_log_probs(model, valid_x, self.masks).double().mean(dim=1)
        self.best_mask = int(valid_nll.argmin())
        return {
            "num_masks": float(len(self.masks)),
            "best_mask": float(self.best_mask),
            "best_valid_nll": float(valid_nll[self.best_mask]),
            "mask_valid_nll_mean": float(valid_nll.mean()),
            "mask_valid_nll_std": float(valid_nll.std()) if len(self.masks) > 1 else 0.0,
        }

    def log_prob(self, model: MADE, x: Tensor) -> dict[str, Tensor]:
        """x: (B, D) -> {"log_prob": (B,) of the best mask, "mask_log_probs": (K, B)} in nats."""
        per_mask = mask_log_probs(model, x, self.masks)
        return {"log_prob": per_mask[self.best_mask], "mask_log_probs": per_mask}
