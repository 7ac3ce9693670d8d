"""Combining the K autoregressive models of one MADE (one per mask) at evaluation time.

The maths is in small functions over a ``(K, N)`` tensor of per-mask log-probabilities;
a strategy object (``conf/ensemble/``) picks the masks, fits what needs fitting on
held-out data (``prepare``) and scores a batch (``log_prob``).

Strategies: ``Mixture`` (uniform, the paper's), ``LearnedMixture`` (EM weights),
``ProductOfExperts`` (normalised geometric mean), ``LogitAverage`` (unnormalised),
``BestSingle`` (the best mask on validation data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from made_exp.made import MADE, Mask, log_bernoulli

__all__ = [
    "mask_log_probs",
    "mixture_log_prob",
    "product_log_prob",
    "poe_log_weights",
    "select_masks",
    "binary_states",
    "enumerate_log_probs",
    "fit_mixture_weights",
    "map_objective",
    "effective_num_components",
    "poe_log_z_exact",
    "poe_log_z_importance",
    "average_logits",
    "Mixture",
    "LearnedMixture",
    "ProductOfExperts",
    "LogitAverage",
    "BestSingle",
]


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


def product_log_prob(log_probs: Tensor) -> Tensor:
    """(K, N) per-mask log p_k(x) -> (N,) log of the geometric mean prod_k p_k(x)^(1/K), unnormalised."""
    return log_probs.mean(dim=0)


def poe_log_weights(log_probs: Tensor) -> Tensor:
    """(K, N) -> (N,) log [geometric mean / arithmetic mean] <= 0: importance weights of the
    product of experts under the uniform-mixture proposal (AM-GM keeps them <= 1)."""
    return product_log_prob(log_probs) - mixture_log_prob(log_probs)


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


def binary_states(input_dim: int, start: int, stop: int, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """States ``start..stop-1`` of {0,1}^D as a (stop - start, D) tensor; state i has x_d = bit d of i."""
    index = torch.arange(start, stop, device=device)
    bits = torch.arange(input_dim, device=device)
    return ((index[:, None] >> bits[None, :]) & 1).to(dtype)


@torch.no_grad()
def enumerate_log_probs(
    log_prob: Callable[[Tensor], Tensor],
    input_dim: int,
    dtype: torch.dtype,
    device: torch.device | str,
    chunk_size: int = 16384,
) -> Tensor:
    """(2^D,) ``log_prob`` of every state of {0,1}^D in the order of ``binary_states``, evaluated in chunks.

    ``logsumexp`` of the result is log sum_x p(x): 0 for a normalised model.
    """
    total = 2**input_dim
    chunks = [
        log_prob(binary_states(input_dim, start, min(start + chunk_size, total), dtype, device))
        for start in range(0, total, chunk_size)
    ]
    return torch.cat(chunks)


def fit_mixture_weights(
    log_probs: Tensor, alpha: float = 1.0, max_iters: int = 200, tol: float = 1e-6
) -> tuple[Tensor, list[float]]:
    """EM for mixture weights over fixed components: (K, N) log p_k(x_n) -> ((K,) log w, objectives).

    Symmetric Dirichlet(alpha) prior; alpha < 1 gives MAP-EM sparsity, w_k ∝ max(n_k + alpha - 1, 0).
    Objectives (nats per example, from the uniform start) stop changing by more than ``tol``.
    """
    num_masks, num_examples = log_probs.shape
    if num_examples + num_masks * (alpha - 1) <= 0:
        raise ValueError(f"alpha={alpha} prunes every component of {num_masks} with {num_examples} examples")
    log_probs = log_probs.double()
    log_weights = torch.full((num_masks,), -math.log(num_masks), dtype=torch.float64, device=log_probs.device)
    history = [map_objective(log_probs, log_weights, alpha)]
    for _ in range(max_iters):
        log_weights = _em_step(log_probs, log_weights, alpha)
        history.append(map_objective(log_probs, log_weights, alpha))
        if abs(history[-1] - history[-2]) < tol:
            break
    return log_weights, history


def map_objective(log_probs: Tensor, log_weights: Tensor, alpha: float) -> float:
    """Mean log-likelihood + log Dirichlet(alpha) prior / N (up to a constant), over the nonzero weights.

    With alpha >= 1 every EM step raises it; with alpha < 1 it rises between steps that prune a weight to 0.
    """
    log_prior = (alpha - 1) * torch.where(log_weights.isfinite(), log_weights, 0.0).sum()
    return float(mixture_log_prob(log_probs, log_weights).mean() + log_prior / log_probs.shape[1])


def _em_step(log_probs: Tensor, log_weights: Tensor, alpha: float) -> Tensor:
    """One EM update of (K,) log weights: responsibilities, then (pseudo-)counts renormalised."""
    counts = torch.softmax(log_probs + log_weights[:, None], dim=0).sum(dim=1)
    mass = (counts + alpha - 1).clamp(min=0)
    return mass.log() - mass.sum().log()


def effective_num_components(log_weights: Tensor) -> float:
    """exp(entropy) of (K,) weights given as logs: K for uniform weights, 1 for a single component."""
    weights = log_weights.exp()
    entropy = -(weights * torch.where(weights > 0, log_weights, 0.0)).sum()
    return float(entropy.exp())


def poe_log_z_exact(model: MADE, masks: Sequence[Mask], chunk_size: int = 16384) -> float:
    """log Z = log sum_x prod_k p_k(x)^(1/K) by enumerating all 2^D states (small D only); Z <= 1."""
    weight = model.output.weight
    return float(
        torch.logsumexp(
            enumerate_log_probs(
                lambda x: product_log_prob(mask_log_probs(model, x, masks)),
                model.input_dim,
                weight.dtype,
                weight.device,
                chunk_size,
            ),
            dim=0,
        )
    )


def poe_log_z_importance(
    model: MADE, masks: Sequence[Mask], num_samples: int, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """Importance-sampling estimate of the product of experts' log Z and its standard error (delta method).

    Proposal: the uniform mixture of the same masks; weights GM/AM <= 1, so the estimator has finite
    variance. log of the mean weight is biased low by about stderr^2 / 2.
    """
    from made_exp.sampling import sample_mixture  # sampling imports this module

    samples = sample_mixture(model, masks, num_samples, generator)
    log_weights = poe_log_weights(mask_log_probs(model, samples, masks)).double()
    log_z = torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
    relative_weights = (log_weights - log_z).exp()
    return float(log_z), float(relative_weights.std() / math.sqrt(num_samples))


@torch.no_grad()
def average_logits(model: MADE, x: Tensor, masks: Sequence[Mask]) -> Tensor:
    """x: (N, D) -> (N, D) logits averaged over the masks (one full-batch pass per mask)."""
    previous = model.current_mask
    try:
        total = torch.zeros_like(x, dtype=model.output.weight.dtype)
        for mask in masks:
            model.set_mask(mask)
            total += model(x)
        return total / len(masks)
    finally:
        model.set_mask(previous)


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

    log Z is exact (all 2^D states) when D <= ``exact_max_dim`` under ``auto``, else importance-sampled.
    Since Z <= 1, the NLL of "unnormalised_log_prob" (log of the geometric mean) bounds the true NLL above.
    """

    name = "poe"

    def __init__(
        self,
        num_masks: int | None = None,
        mask_source: str = "bank",
        seed: int = 1234,
        log_z_method: str = "auto",
        num_importance_samples: int = 10000,
        exact_max_dim: int = 20,
        chunk_size: int = 16384,
    ):
        if log_z_method not in ("auto", "exact", "importance"):
            raise ValueError(f"log_z_method={log_z_method!r} is not one of auto, exact, importance")
        super().__init__(num_masks, mask_source, seed)
        self.log_z_method, self.num_importance_samples = log_z_method, num_importance_samples
        self.exact_max_dim, self.chunk_size = exact_max_dim, chunk_size
        self.log_z = math.nan

    def prepare(self, model: MADE, valid_x: Tensor | None = None) -> dict[str, float]:
        """Pick the masks and compute log Z (with its standard error, 0 when exact); returns scalars to log."""
        super().prepare(model)
        exact = self.log_z_method == "exact" or (self.log_z_method == "auto" and model.input_dim <= self.exact_max_dim)
        if exact:
            self.log_z, stderr = poe_log_z_exact(model, self.masks, self.chunk_size), 0.0
        else:
            generator = torch.Generator().manual_seed(self.seed)
            self.log_z, stderr = poe_log_z_importance(model, self.masks, self.num_importance_samples, generator)
        return {"num_masks": float(len(self.masks)), "log_z": self.log_z, "log_z_stderr": stderr}

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
