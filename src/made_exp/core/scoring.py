"""Scoring a MADE's K autoregressive models (one per mask): per-mask log-probabilities, their mixture and
product, exact enumeration for small D, and EM for mixture weights.

The maths is in small functions over a ``(K, N)`` tensor of per-mask log-probabilities.

Examples:
    >>> log_probs = torch.log(torch.tensor([[0.5], [0.25]]))  # K = 2 masks, N = 1 example
    >>> round(float(mixture_log_prob(log_probs).exp()), 4)  # (0.5 + 0.25) / 2
    0.375
    >>> round(float(product_log_prob(log_probs).exp()), 4)  # sqrt(0.5 * 0.25), unnormalised
    0.3536
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from made_exp.core.made import MADE, Mask

__all__ = [
    "per_mask_log_probs",
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
    "average_logits",
]


def per_mask_log_probs(model: MADE, x: Tensor, masks: Sequence[Mask | int]) -> Tensor:
    """x: (N, D) -> (K, N) log p_k(x) in nats, one full-batch pass per mask (GEMM-bound, no per-example loop),
    differentiable (for training objectives over several masks)."""
    rows = []
    with model.using_mask():
        for mask in masks:
            model.set_mask(mask)
            rows.append(model.log_prob(x))
    return torch.stack(rows)


@torch.no_grad()
def mask_log_probs(model: MADE, x: Tensor, masks: Sequence[Mask | int]) -> Tensor:
    """x: (N, D) -> (K, N) log p_k(x) in nats, without gradients (scoring)."""
    return per_mask_log_probs(model, x, masks)


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


@torch.no_grad()
def average_logits(model: MADE, x: Tensor, masks: Sequence[Mask]) -> Tensor:
    """x: (N, D) -> (N, D) logits averaged over the masks (one full-batch pass per mask)."""
    total = torch.zeros_like(x, dtype=model.output.weight.dtype)
    with model.using_mask():
        for mask in masks:
            model.set_mask(mask)
            total += model(x)
    return total / len(masks)
