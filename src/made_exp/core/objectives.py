"""Training objectives beyond the Jensen bound: the normalised product of experts and the learned-weight mixture.

Random-mask training minimises ``-mean_k log p_k(x)``: the NLL of the *unnormalised* product
``GM(x) = prod_k p_k(x)^(1/K)``, and a Jensen upper bound on the uniform mixture's NLL. The two
losses here are the NLLs of the models that are tested:

- ``poe_loss``: ``-mean_n log GM(x_n) + log Z(θ)``, the product of experts with its normaliser.
  ``∇ log Z = E_{x ~ PoE}[∇ log GM(x)]``, computed exactly by enumeration (D <= 20) or estimated by
  self-normalised importance sampling from the uniform mixture.
- ``learned_mixture_loss``: ``-mean_n log sum_k w_k p_k(x_n)`` with ``w = softmax(logits)`` trained
  beside the network (``MixtureWeights``), over all K masks or an unbiased subset estimate of the density.

Each returns ``(loss, stats)``: a scalar whose gradient is the objective's (exact or as stated), and
floats to log.

Examples:
    >>> from made_exp.core.made import MADE
    >>> model = MADE(input_dim=6, hidden_sizes=[16], num_masks=3)
    >>> loss, stats = poe_loss(model, torch.ones(4, 6), masks=[0, 1, 2], log_z="exact")
    >>> loss.backward()
    >>> sorted(stats)
    ['log_z', 'unnormalised_nll']
    >>> weights = MixtureWeights(num_masks=3)
    >>> loss, stats = learned_mixture_loss(model, weights, torch.ones(4, 6))
    >>> round(stats["effective_num_masks"], 6)  # exp(entropy of w): uniform weights at the start
    3.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from made_exp.core.ais import summarise_log_weights
from made_exp.core.choices import LOG_Z_METHODS
from made_exp.core.made import MADE, Mask
from made_exp.core.nce import NoiseContrastiveLogZ
from made_exp.core.normaliser import poe_log_z_exact
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import (
    binary_states,
    effective_num_components,
    per_mask_log_probs,
    poe_log_weights,
    product_log_prob,
)
from made_exp.core.smc import ParticleLogZ

__all__ = [
    "LOG_Z_METHODS",
    "poe_loss",
    "exact_log_z_gradient",
    "estimator_degraded",
    "MixtureWeights",
    "learned_mixture_loss",
    "subset_mixture_log_prob",
]

MaskLike = Mask | int


def _trainable(model: MADE) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _linear_surrogate(parameters: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """A scalar equal to 0 whose gradient with respect to each parameter is the given (detached) gradient."""
    return sum(((p - p.detach()) * g).sum() for p, g in zip(parameters, gradients, strict=True))


def exact_log_z_gradient(model: MADE, masks: Sequence[MaskLike], log_z: float, chunk_size: int = 16384) -> list[Tensor]:
    """∇_θ log Z = sum_x PoE(x) ∇ log GM(x) over all 2^D states, one chunk of states at a time.

    Each chunk's graph is freed before the next, so memory is that of one chunk (a 2^20-state graph
    would hold every hidden activation of every mask). Returns one tensor per trainable parameter.
    """
    parameters = _trainable(model)
    weight = model.output.weight
    total = 2**model.input_dim
    gradients = [torch.zeros_like(p) for p in parameters]
    for start in range(0, total, chunk_size):
        states = binary_states(model.input_dim, start, min(start + chunk_size, total), weight.dtype, weight.device)
        log_gm = product_log_prob(per_mask_log_probs(model, states, masks))
        poe = (log_gm.detach().double() - log_z).exp().to(log_gm)
        chunk = torch.autograd.grad((poe * log_gm).sum(), parameters, allow_unused=True)
        for accumulated, g in zip(gradients, chunk, strict=True):
            if g is not None:
                accumulated += g
    return gradients


def poe_loss(
    model: MADE,
    x: Tensor,
    masks: Sequence[MaskLike],
    log_z: str = "exact",
    num_samples: int = 1000,
    generator: torch.Generator | None = None,
    chunk_size: int = 16384,
    estimator: ParticleLogZ | NoiseContrastiveLogZ | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """NLL of the normalised product of experts: x: (B, D) -> (scalar nats per example, stats).

    ``log_z="exact"``: log Z by enumerating the 2^D states (``normaliser.poe_log_z_exact``, the code that
    scores the PoE), gradient ``E_PoE[∇ log GM]`` exact, accumulated chunk by chunk. Cost: 2 x 2^D x K
    forward passes (one without, one with gradient) per step: 0.04 s at D = 10, K = 4, 500 hidden units,
    2.3 s at D = 16 (one CPU thread here), so D <= 20 is the ceiling, not the comfortable range.

    ``log_z="importance"``: ``num_samples`` S draws from the uniform mixture (no gradient through
    sampling), normalised detached weights ``w̄_s ∝ GM(x_s) / AM(x_s)``; the gradient of the log Z term is
    ``sum_s w̄_s ∇ log GM(x_s)``, the self-normalised importance-sampling (SNIS) estimate of ``∇ log Z``.
    SNIS is biased, by O(1/S) (the ratio of two unbiased sums), and consistent: the bias and the
    variance both fall as 1/S. The loss's *value* uses log of the mean weight, biased low by about
    stderr^2 / 2. Cost: S samples plus K passes over them with gradient, per step.

    ``log_z="smc"``: the persistent particles of ``estimator`` (a ``smc.ParticleLogZ``), reweighted to the
    current parameters each step; ``log_z="nce"``: ``estimator`` (a ``nce.NoiseContrastiveLogZ``) gives the whole
    loss, noise-contrastive with a learned log Z. Their bias and cost are in those modules.

    Stats: ``log_z``, ``unnormalised_nll`` (-mean log GM), and for importance sampling ``log_z_stderr``
    (delta method), ``effective_sample_size`` ((sum w)^2 / sum w^2) and its fraction of S; the estimators'
    own for ``smc`` and ``nce``.
    """
    if log_z not in LOG_Z_METHODS:
        raise ValueError(f"log_z={log_z!r} is not one of {', '.join(LOG_Z_METHODS)}")
    masks = [model.mask(m) if isinstance(m, int) else m for m in masks]
    if log_z in ("smc", "nce") and estimator is None:
        raise ValueError(f"log_z={log_z!r} needs the estimator's state (MaskSchedule.log_z_estimator)")
    if log_z == "nce":
        return estimator.loss(model, x, masks, generator)
    unnormalised_nll = -product_log_prob(per_mask_log_probs(model, x, masks)).mean()
    if log_z == "exact":
        log_z_value = poe_log_z_exact(model, masks, chunk_size)
        log_z_term = _linear_surrogate(_trainable(model), exact_log_z_gradient(model, masks, log_z_value, chunk_size))
        stats = {}
    elif log_z == "smc":
        log_z_value, log_z_term, stats = estimator.log_z_term(model, masks, generator)
    else:
        log_z_value, log_z_term, stats = _importance_log_z(model, masks, num_samples, generator)
    loss = unnormalised_nll + log_z_term + log_z_value
    return loss, {"log_z": log_z_value, "unnormalised_nll": float(unnormalised_nll.detach()), **stats}


def _importance_log_z(
    model: MADE, masks: Sequence[Mask], num_samples: int, generator: torch.Generator | None
) -> tuple[float, Tensor, dict[str, float]]:
    """(log Z estimate, zero-valued scalar with the SNIS gradient of log Z, stats), from S mixture samples."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    samples = sample_mixture(model, masks, num_samples, generator)
    per_mask = per_mask_log_probs(model, samples, masks)
    log_gm = product_log_prob(per_mask)
    log_weights = poe_log_weights(per_mask.detach())
    normalised = torch.softmax(log_weights.double(), dim=0).to(log_gm)
    surrogate = (normalised * log_gm).sum()
    log_z_value, stderr, ess = summarise_log_weights(log_weights)
    stats = {"log_z_stderr": stderr, "effective_sample_size": ess, "effective_sample_fraction": ess / num_samples}
    return log_z_value, surrogate - surrogate.detach(), stats


MIN_EFFECTIVE_SAMPLE_FRACTION = 0.05  # importance sampling: fewer effective samples, and a few carry log Z
MIN_DISTINCT_FRACTION = 0.05  # smc: fewer distinct particles after a move, and the particles have collapsed
MAX_CLASSIFIER_ACCURACY = 0.99  # nce: data and noise this separable leave almost no gradient


def estimator_degraded(stats: dict[str, float]) -> str | None:
    """Why the poe objective's log Z estimator degraded over an epoch, from its mean stats; None if it did not.

    importance: ESS below 5% of S; smc: under 5% distinct particles after its moves; nce: the classifier right
    on over 99% of data and noise.
    """
    if "resampled" in stats:
        distinct = stats.get("distinct_fraction")
        if distinct is not None and distinct < MIN_DISTINCT_FRACTION:
            return f"particles collapsed: {distinct:.1%} distinct after the moves"
        return None
    if "classifier_accuracy" in stats:
        accuracy = stats["classifier_accuracy"]
        if accuracy > MAX_CLASSIFIER_ACCURACY:
            return f"noise too far: the classifier is right on {accuracy:.1%}"
        return None
    fraction = stats.get("effective_sample_fraction")
    if fraction is not None and fraction < MIN_EFFECTIVE_SAMPLE_FRACTION:
        return f"importance weights: ESS {fraction:.1%} of the samples"
    return None


class MixtureWeights(nn.Module):
    """(K,) mixture weights over a bank of masks, ``w = softmax(logits)``, logits starting at 0 (uniform).

    ``alpha``: symmetric Dirichlet(alpha) prior on w; 1 is none. Only alpha >= 1: below 1 the prior's
    density is unbounded where a weight reaches 0, so gradient descent would chase it forever
    (``scoring.fit_mixture_weights`` does the sparse MAP-EM instead).
    """

    def __init__(self, num_masks: int, alpha: float = 1.0):
        super().__init__()
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        if alpha < 1:
            raise ValueError(f"alpha={alpha} < 1 makes the MAP objective unbounded; use alpha >= 1")
        self.alpha = alpha
        self.logits = nn.Parameter(torch.zeros(num_masks))

    def log_weights(self) -> Tensor:
        """(K,) log w, summing to 1 in probability."""
        return torch.log_softmax(self.logits, dim=0)

    def log_prior(self) -> Tensor:
        """Scalar log Dirichlet(w; alpha) up to a constant: (alpha - 1) sum_k log w_k."""
        return (self.alpha - 1) * self.log_weights().sum()

    def effective_num_masks(self) -> float:
        """exp(entropy(w)): K for uniform weights, 1 for one mask."""
        return effective_num_components(self.log_weights().detach())


def subset_mixture_log_prob(subset_log_probs: Tensor, subset_log_weights: Tensor, num_masks: int) -> Tensor:
    """(S, N) log p_k(x) and (S,) log w_k of S masks drawn uniformly without replacement from K ->
    (N,) log of (K / S) sum_s w_s p_s(x), an unbiased estimate of the density sum_k w_k p_k(x)."""
    num_sampled = subset_log_probs.shape[0]
    return torch.logsumexp(subset_log_probs + subset_log_weights[:, None], dim=0) + math.log(num_masks / num_sampled)


def learned_mixture_loss(
    model: MADE,
    weights: MixtureWeights,
    x: Tensor,
    num_sampled: int | None = None,
    num_examples: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """NLL of the mixture sum_k w_k p_k over the model's K bank masks: x: (B, D) -> (scalar, stats).

    All K masks (``num_sampled`` None or K): the exact ``-mean_n log sum_k w_k p_k(x_n)``; K forward passes
    per step. ``num_sampled`` S < K: S masks drawn uniformly without replacement, the loss
    ``-mean_n log((K/S) sum_s w_s p_s(x_n))``; the density estimate is unbiased, so by Jensen the loss is
    biased *up* (an upper bound on the NLL in expectation), the gap shrinking to 0 at S = K; S passes per step.
    That gap depends on θ and w (it is smaller where subsets agree, e.g. for even weights), so for S < K the
    minimiser is not the full mixture's: prefer all K masks where K passes per step are affordable.
    The prior adds ``-log_prior / num_examples`` (the dataset size; default B), so that the per-example loss
    over the data set is the negative log posterior / N, as ``scoring.map_objective`` measures.
    Stats: ``effective_num_masks``.
    """
    num_masks = weights.logits.shape[0]
    if num_masks != model.num_masks:
        raise ValueError(f"{num_masks} mixture weights for a bank of {model.num_masks} masks")
    log_weights = weights.log_weights()
    if num_sampled is None or num_sampled == num_masks:
        chosen = list(range(num_masks))
    elif 1 <= num_sampled < num_masks:
        chosen = torch.randperm(num_masks, generator=generator)[:num_sampled].tolist()
    else:
        raise ValueError(f"num_sampled={num_sampled} is not between 1 and the number of masks {num_masks}")
    log_probs = per_mask_log_probs(model, x, chosen)
    log_density = subset_mixture_log_prob(log_probs, log_weights[chosen].to(log_probs), num_masks)
    loss = -log_density.mean() - weights.log_prior().to(log_density) / (num_examples or len(x))
    return loss, {"effective_num_masks": weights.effective_num_masks()}
