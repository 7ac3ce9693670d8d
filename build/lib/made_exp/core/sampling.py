"""Drawing samples from a MADE: one mask, a mixture or the product of masks, and imputation.

Ancestral samplers take uniform noise ``u`` of shape (N, D), indexed by input dimension, and
set ``x_d = u_d < p(x_d = 1 | x_<d)``, so that different samplers can be compared on the same noise.
``sample_naive`` runs D full forward passes; ``sample_incremental`` computes every hidden unit
once, as soon as the inputs it sees are final, so one sample costs about one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from made_exp.core.made import MADE, Mask, MaskedLinear
from made_exp.core.scoring import binary_states, enumerate_log_probs, mask_log_probs, poe_log_weights, product_log_prob

__all__ = ["sample_naive", "sample_incremental", "sample_mixture", "sample_poe_sir", "sample_poe_exact", "impute"]


def _noise(model: MADE, num_samples: int, uniform: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """(N, D) uniform noise in the model's dtype and device: ``uniform`` if given, else drawn from ``generator``."""
    weight = model.output.weight
    if uniform is None:
        device = generator.device if generator is not None else weight.device
        uniform = torch.rand(num_samples, model.input_dim, generator=generator, dtype=weight.dtype, device=device)
    if uniform.shape != (num_samples, model.input_dim):
        raise ValueError(f"uniform must have shape ({num_samples}, {model.input_dim}), got {tuple(uniform.shape)}")
    return uniform.to(weight)


@torch.no_grad()
def sample_naive(
    model: MADE,
    mask: Mask,
    num_samples: int,
    uniform: Tensor | None = None,
    generator: torch.Generator | None = None,
    num_positions: int | None = None,
) -> Tensor:
    """Exact ancestral sampling with D full forward passes -> (N, D) in {0, 1} (the reference sampler).

    ``num_positions``: sample only the first positions of the ordering (the rest stay 0), e.g. to time a prefix.
    """
    uniform = _noise(model, num_samples, uniform, generator)
    x = torch.zeros_like(uniform)
    with model.using_mask(mask), model.cache_masked_weights():  # D passes, one W * M per layer
        for dim in mask.ordering[:num_positions].tolist():
            x[:, dim] = (uniform[:, dim] < torch.sigmoid(model(x)[:, dim])).to(x)
    return x


@dataclass
class _SortedNet:
    """The model's weights under one mask, permuted so that every connection pattern is a prefix slice.

    Inputs and outputs are in ordering position order, hidden units sorted by degree;
    ``counts[l][m]`` is the number of units of layer l with degree <= m (m = 0..D).
    """

    weights: list[Tensor]
    biases: list[Tensor]
    skips: list[Tensor]
    counts: list[list[int]]
    output_weight: Tensor
    output_bias: Tensor
    direct: Tensor | None
    activation: nn.Module


def _effective_bias(layer: MaskedLinear) -> Tensor:
    """(out,) bias including the mask-conditioned term (U * M) 1 under the layer's current mask."""
    if layer.mask_weight is None:
        return layer.bias
    return layer.bias + (layer.mask_weight * layer.mask).sum(1)


def _sorted_net(model: MADE, mask: Mask) -> _SortedNet:
    """Permute the model's weights for ``mask`` (which must be set on the model, for the biases)."""
    device = model.output.weight.device
    ordering = mask.ordering.to(device)
    perms, counts = [], []
    for degrees in mask.hidden_degrees:
        sorted_degrees, perm = torch.sort(degrees.to(device), stable=True)
        perms.append(perm)
        levels = torch.arange(model.input_dim + 1, device=device)
        counts.append(torch.searchsorted(sorted_degrees, levels, right=True).tolist())
    columns = [ordering, *perms[:-1]]
    return _SortedNet(
        weights=[layer.weight[rows][:, cols] for layer, rows, cols in zip(model.hidden, perms, columns, strict=True)],
        biases=[_effective_bias(layer)[rows] for layer, rows in zip(model.hidden, perms, strict=True)],
        # input skips exist only with direct_connection=full
        skips=[skip.weight[rows][:, ordering] for skip, rows in zip(model.input_skips, perms[1:], strict=False)],
        counts=counts,
        output_weight=model.output.weight[ordering][:, perms[-1]],
        output_bias=_effective_bias(model.output)[ordering],
        direct=None if model.direct is None else model.direct.weight[ordering][:, ordering],
        activation=model.activation,
    )


@torch.no_grad()
def sample_incremental(
    model: MADE,
    mask: Mask,
    num_samples: int,
    uniform: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Exact ancestral sampling in about one forward pass -> (N, D) in {0, 1}; same samples as ``sample_naive``.

    A hidden unit of degree m sees only inputs at positions <= m: it is computed once, right after
    position m is sampled, and the logit at position p needs only units of degree < p.
    """
    uniform = _noise(model, num_samples, uniform, generator)
    with model.using_mask(mask):
        net = _sorted_net(model, mask)
    ordering = mask.ordering.to(uniform.device)
    uniform = uniform[:, ordering]
    x = torch.zeros_like(uniform)
    hidden = [uniform.new_zeros(num_samples, len(bias)) for bias in net.biases]
    num_inputs = model.input_dim
    for position in range(num_inputs):
        seen = net.counts[-1][position]  # last-layer units of degree < position + 1
        logit = hidden[-1][:, :seen] @ net.output_weight[position, :seen] + net.output_bias[position]
        if net.direct is not None:
            logit = logit + x[:, :position] @ net.direct[position, :position]
        x[:, position] = (uniform[:, position] < torch.sigmoid(logit)).to(x)
        degree = position + 1
        if degree == num_inputs:
            break
        _compute_units_of_degree(net, x, hidden, degree)
    samples = torch.empty_like(x)
    samples[:, ordering] = x
    return samples


def _compute_units_of_degree(net: _SortedNet, x: Tensor, hidden: list[Tensor], degree: int) -> None:
    """Fill, in every layer, the units of exactly ``degree``: their inputs (positions <= degree) are final."""
    below = x[:, :degree]
    for layer, weight in enumerate(net.weights):
        start, stop = net.counts[layer][degree - 1], net.counts[layer][degree]
        if start < stop:
            pre = torch.addmm(net.biases[layer][start:stop], below, weight[start:stop, : below.shape[1]].T)
            if layer > 0 and net.skips:
                pre = pre.addmm_(x[:, :degree], net.skips[layer - 1][start:stop, :degree].T)
            hidden[layer][:, start:stop] = net.activation(pre)
        below = hidden[layer][:, :stop]


@torch.no_grad()
def sample_mixture(
    model: MADE, masks: Sequence[Mask], num_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """(N, D) samples of the uniform mixture over ``masks``: a component per sample, then ancestral sampling."""
    components = torch.randint(len(masks), (num_samples,), generator=generator)
    samples = model.output.weight.new_empty(num_samples, model.input_dim)
    for component, mask in enumerate(masks):
        rows = torch.nonzero(components == component).flatten().to(samples.device)
        if len(rows):
            samples[rows] = sample_incremental(model, mask, len(rows), generator=generator)
    return samples


@torch.no_grad()
def sample_poe_sir(
    model: MADE,
    masks: Sequence[Mask],
    num_samples: int,
    num_proposals: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(N, D) approximate samples of the product of experts by sampling-importance-resampling.

    Proposals from the uniform mixture, resampled with weights GM/AM; exact as num_proposals -> inf.
    """
    proposals = sample_mixture(model, masks, num_proposals, generator)
    log_weights = poe_log_weights(mask_log_probs(model, proposals, masks))
    return proposals[_resample(log_weights, num_samples, generator).to(proposals.device)]


@torch.no_grad()
def sample_poe_exact(
    model: MADE, masks: Sequence[Mask], num_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """(N, D) exact samples of the product of experts by enumerating all 2^D states (small D only)."""
    weight = model.output.weight
    log_gm = enumerate_log_probs(
        lambda x: product_log_prob(mask_log_probs(model, x, masks)), model.input_dim, weight.dtype, weight.device
    )
    index = _resample(log_gm, num_samples, generator)
    return binary_states(model.input_dim, 0, 2**model.input_dim, weight.dtype, weight.device)[index.to(weight.device)]


def _resample(log_weights: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
    """(M,) unnormalised log weights -> (N,) indices drawn with replacement in proportion to the weights."""
    probabilities = torch.softmax(log_weights.double(), dim=0).cpu()
    return torch.multinomial(probabilities, num_samples, replacement=True, generator=generator)


@torch.no_grad()
def impute(model: MADE, x: Tensor, observed: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x: (N, D) in {0, 1}, observed: (N, D) or (D,) bool -> (N, D) with the missing dims sampled given the rest.

    Uses an ordering with the observed dims first (hidden degrees of mask 0), so the samples are exact
    for the model under that ordering, which was trained only if the orderings were resampled.
    """
    observed = observed.to(torch.bool).expand_as(x)
    reference = model.mask(0)
    uniform = _noise(model, len(x), None, generator)
    # noise below 0 (above 1) forces a 1 (a 0) whatever the conditional: observed values pass through
    uniform = torch.where(observed, torch.where(x.bool(), -1.0, 2.0).to(uniform), uniform)
    patterns, pattern_of_row = torch.unique(observed, dim=0, return_inverse=True)
    samples = torch.empty_like(uniform)
    for index, pattern in enumerate(patterns):
        rows = torch.nonzero(pattern_of_row == index).flatten()
        ordering = reference.ordering.to(pattern.device)
        ordering = torch.cat([ordering[pattern[ordering]], ordering[~pattern[ordering]]])
        mask = Mask(ordering, reference.hidden_degrees)
        samples[rows] = sample_incremental(model, mask, len(rows), uniform=uniform[rows])
    return samples
