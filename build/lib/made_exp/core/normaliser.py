"""log Z of the normalised product of experts ``prod_k p_k(x)^(1/K) / Z`` over a MADE's masks.

Z <= 1 (a geometric mean never exceeds the arithmetic mean, whose sum over x is 1). Exact by enumerating
{0,1}^D for small D; otherwise importance sampling with the uniform mixture of the same masks as proposal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from made_exp.core.made import MADE, Mask
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import enumerate_log_probs, mask_log_probs, poe_log_weights, product_log_prob

__all__ = ["poe_log_z_exact", "poe_log_z_importance"]


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
    samples = sample_mixture(model, masks, num_samples, generator)
    log_weights = poe_log_weights(mask_log_probs(model, samples, masks)).double()
    log_z = torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
    relative_weights = (log_weights - log_z).exp()
    return float(log_z), float(relative_weights.std() / math.sqrt(num_samples))
