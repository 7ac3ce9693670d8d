"""Samplers: exact agreement of the one-pass sampler with the naive one, χ² against enumeration, imputation."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_made
from made_exp.core.made import Mask
from made_exp.core.sampling import (
    impute,
    sample_incremental,
    sample_mixture,
    sample_naive,
    sample_poe_exact,
    sample_poe_sir,
)
from made_exp.core.scoring import enumerate_log_probs, mask_log_probs, mixture_log_prob, product_log_prob


def exact_probabilities(log_prob, input_dim: int) -> torch.Tensor:
    """(2^D,) normalised probabilities of every state, in the order of ``binary_states``."""
    return torch.softmax(enumerate_log_probs(log_prob, input_dim, torch.float64, "cpu"), dim=0)


def state_index(samples: torch.Tensor) -> torch.Tensor:
    """(N, D) {0,1} -> (N,) index of each state, x_d = bit d (the order of ``binary_states``)."""
    return (samples.long() << torch.arange(samples.shape[1])).sum(1)


def assert_chi_squared_fits(samples: torch.Tensor, probabilities: torch.Tensor) -> None:
    """Pearson χ² of the samples' state counts against ``probabilities``, at p = 1e-3.

    Cells of probability 0 must stay empty, cells expected below 5 counts are pooled;
    the critical value is Wilson–Hilferty's approximation.
    """
    counts = torch.bincount(state_index(samples), minlength=len(probabilities)).double()
    assert counts[probabilities == 0].sum() == 0, "a sample has probability 0"
    counts, expected = counts[probabilities > 0], probabilities[probabilities > 0] * len(samples)
    small = expected < 5
    observed_cells = torch.cat([counts[~small], counts[small].sum()[None]])
    expected_cells = torch.cat([expected[~small], expected[small].sum()[None]])
    statistic = float(((observed_cells - expected_cells) ** 2 / expected_cells.clamp(min=1e-300)).sum())
    dof = len(observed_cells) - 1
    z = float(torch.special.ndtri(torch.tensor(1 - 1e-3, dtype=torch.float64)))
    critical = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert dof >= 10, "too few cells for a meaningful test"
    assert statistic < critical, f"chi2 = {statistic:.1f} > {critical:.1f} (dof {dof})"


CONFIGS = [
    dict(activation=activation, hidden_sizes=hidden_sizes, direct_connection=direct)
    for activation in ("relu", "tanh")
    for hidden_sizes in ([24], [24, 16])
    for direct in ("none", "output", "full")
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c['activation']}-{len(c['hidden_sizes'])}-{c['direct_connection']}"
)
def test_incremental_equals_naive_on_same_noise(config):
    model = random_made(12, condition_on_mask=True, **config)
    for index in range(model.num_masks):
        uniform = torch.rand(300, 12, generator=torch.Generator().manual_seed(index), dtype=torch.float64)
        naive = sample_naive(model, model.mask(index), 300, uniform)
        assert torch.equal(sample_incremental(model, model.mask(index), 300, uniform), naive)


def test_incremental_equals_naive_two_layers_d50():
    model = random_made(50, hidden_sizes=[80, 60], direct_connection="full", condition_on_mask=True)
    generator = torch.Generator().manual_seed(0)
    mask = model.draw_mask(generator)
    uniform = torch.rand(200, 50, generator=generator, dtype=torch.float64)
    assert torch.equal(sample_incremental(model, mask, 200, uniform), sample_naive(model, mask, 200, uniform))


def test_sampler_restores_current_mask():
    model = random_made(6)
    sample_incremental(model, model.mask(2), 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.current_mask.ordering, model.mask(0).ordering)


@pytest.mark.parametrize("sampler", [sample_naive, sample_incremental])
def test_single_mask_sampler_matches_exact(sampler):
    model = random_made(6, direct_connection="output")
    mask = model.mask(1)
    samples = sampler(model, mask, 20000, generator=torch.Generator().manual_seed(0))
    probabilities = exact_probabilities(lambda x: mask_log_probs(model, x, [mask])[0], 6)
    assert_chi_squared_fits(samples, probabilities)


def test_mixture_sampler_matches_exact():
    model = random_made(7)
    masks = [model.mask(k) for k in range(3)]
    samples = sample_mixture(model, masks, 20000, torch.Generator().manual_seed(0))
    probabilities = exact_probabilities(lambda x: mixture_log_prob(mask_log_probs(model, x, masks)), 7)
    assert_chi_squared_fits(samples, probabilities)


@pytest.mark.parametrize("method", ["exact", "sir"])
def test_poe_samplers_match_exact(method):
    model = random_made(6)
    masks = [model.mask(k) for k in range(3)]
    generator = torch.Generator().manual_seed(0)
    if method == "exact":
        samples = sample_poe_exact(model, masks, 20000, generator)
    else:
        samples = sample_poe_sir(model, masks, 3000, num_proposals=300000, generator=generator)
    probabilities = exact_probabilities(lambda x: product_log_prob(mask_log_probs(model, x, masks)), 6)
    assert_chi_squared_fits(samples, probabilities)


def test_impute_keeps_observed_values():
    model = random_made(10)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 10, generator=generator) < 0.5).double()
    observed = torch.rand(200, 10, generator=generator) < 0.4
    imputed = impute(model, x, observed, generator)
    assert torch.equal(imputed[observed], x[observed])
    assert set(imputed.unique().tolist()) <= {0.0, 1.0}


def test_impute_matches_exact_conditional():
    model = random_made(10)
    observed = torch.tensor([True, False, False, True, False, False, True, False, False, False])
    values = torch.tensor([1.0, 0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64)
    imputed = impute(model, values.expand(20000, 10).clone(), observed, torch.Generator().manual_seed(0))
    reference = model.mask(0).ordering
    ordering = torch.cat([reference[observed[reference]], reference[~observed[reference]]])
    mask = Mask(ordering, model.mask(0).hidden_degrees)
    joint = exact_probabilities(lambda x: mask_log_probs(model, x, [mask])[0], 10)
    consistent = (state_index(values[None]) ^ torch.arange(2**10)) & state_index(observed[None].double()) == 0
    conditional = torch.where(consistent, joint, 0.0)
    assert_chi_squared_fits(imputed, conditional / conditional.sum())
