"""Ensemble strategies: normalisation by enumeration, log Z estimates, EM, Jensen's inequality, configs."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch

from conftest import random_made
from made_exp.core.ensemble import BestSingle, LearnedMixture, LogitAverage, Mixture, ProductOfExperts
from made_exp.core.made import MADE
from made_exp.core.normaliser import poe_log_z_exact, poe_log_z_importance
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import (
    effective_num_components,
    enumerate_log_probs,
    fit_mixture_weights,
    mask_log_probs,
    mixture_log_prob,
)
from made_exp.runs.config import compose_ensemble

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "ensemble"


def log_total_mass(log_prob, model: MADE) -> float:
    """log sum_x exp(log_prob(x)) over {0,1}^D."""
    return float(torch.logsumexp(enumerate_log_probs(log_prob, model.input_dim, torch.float64, "cpu"), dim=0))


def valid_data(model: MADE, num_examples: int = 300, seed: int = 1) -> torch.Tensor:
    """(N, D) samples of the model's uniform mixture, as stand-in validation data."""
    masks = [model.mask(k) for k in range(model.num_masks)]
    return sample_mixture(model, masks, num_examples, torch.Generator().manual_seed(seed))


def test_single_mask_is_normalised():
    model = random_made(10, num_masks=4, direct_connection="full", condition_on_mask=True)
    assert abs(math.exp(log_total_mass(model.log_prob, model)) - 1) < 1e-5


@pytest.mark.parametrize(
    "strategy",
    [Mixture(), LearnedMixture(alpha=0.5), ProductOfExperts(log_z_method="exact", chunk_size=100)],
    ids=["mixture", "learned_mixture", "product_of_experts"],
)
def test_normalised_strategies_sum_to_one(strategy):
    model = random_made(10, num_masks=4)
    strategy.prepare(model, valid_data(model))
    total = log_total_mass(lambda x: strategy.log_prob(model, x)["log_prob"], model)
    assert strategy.normalised
    assert abs(math.exp(total) - 1) < 1e-5


def test_poe_importance_estimate_within_three_standard_errors():
    model = random_made(10, num_masks=4)
    masks = [model.mask(k) for k in range(model.num_masks)]
    exact = poe_log_z_exact(model, masks)
    estimate, stderr = poe_log_z_importance(model, masks, 4000, torch.Generator().manual_seed(0))
    assert exact < 0  # AM-GM: Z < 1 when the masks disagree
    assert 0 < stderr < 0.1
    assert abs(estimate - exact) < 3 * stderr


def test_poe_reports_both_scores():
    model = random_made(10, num_masks=4)
    strategy = ProductOfExperts(log_z_method="importance", num_importance_samples=2000)
    scalars = strategy.prepare(model)
    out = strategy.log_prob(model, valid_data(model, 50))
    assert scalars["log_z"] < 0 and scalars["log_z_stderr"] > 0
    torch.testing.assert_close(
        out["unnormalised_log_prob"] - out["log_prob"], torch.full((50,), scalars["log_z"], dtype=torch.float64)
    )


def test_poe_ais_estimate_within_three_standard_errors_of_enumeration():
    model = random_made(10, num_masks=4)
    exact = poe_log_z_exact(model, [model.mask(k) for k in range(4)])
    scalars = ProductOfExperts(log_z_method="ais", ais_chains=500, ais_temperatures=30).prepare(model)
    assert exact < -1  # the masks disagree: far from the trivial Z = 1
    assert 0 < scalars["log_z_stderr"] < 0.05
    assert abs(scalars["log_z"] - exact) < 3 * scalars["log_z_stderr"]
    assert 1 <= scalars["effective_sample_size"] <= 500


@pytest.mark.parametrize("exact_max_dim,method", [(10, "exact"), (9, "importance")])
def test_poe_auto_is_exact_up_to_exact_max_dim_else_importance(exact_max_dim, method):
    model = random_made(10, num_masks=4)
    masks = [model.mask(k) for k in range(4)]
    scalars = ProductOfExperts(seed=7, num_importance_samples=300, exact_max_dim=exact_max_dim).prepare(model)
    if method == "exact":
        expected = poe_log_z_exact(model, masks), 0.0
    else:
        expected = poe_log_z_importance(model, masks, 300, torch.Generator().manual_seed(7))
    assert (scalars["log_z"], scalars["log_z_stderr"]) == pytest.approx(expected, abs=1e-12)
    assert "effective_sample_size" not in scalars  # AIS only


def test_poe_rejects_an_unknown_log_z_method():
    with pytest.raises(ValueError, match="auto, exact, importance, ais"):
        ProductOfExperts(log_z_method="guess")


def em_data(seed: int = 0) -> torch.Tensor:
    """(K, N) = (12, 25) per-component log-likelihoods, a few components much better than the rest."""
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(12, 25, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_em_objective_never_decreases(alpha):
    log_weights, history = fit_mixture_weights(em_data(), alpha=alpha, max_iters=500, tol=1e-12)
    assert len(history) > 5
    assert all(later >= earlier - 1e-12 for earlier, later in zip(history[:-1], history[1:], strict=True))
    torch.testing.assert_close(log_weights.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_em_sparse_prior_prunes_weights():
    dense, _ = fit_mixture_weights(em_data(), alpha=1.0, max_iters=500)
    sparse, _ = fit_mixture_weights(em_data(), alpha=0.2, max_iters=500)
    assert int(sparse.isfinite().sum()) < int(dense.isfinite().sum())
    assert effective_num_components(sparse) < effective_num_components(dense)
    torch.testing.assert_close(sparse.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_learned_mixture_reports_weights():
    model = random_made(10, num_masks=4)
    strategy = LearnedMixture()
    scalars = strategy.prepare(model, valid_data(model))
    assert strategy.weights.shape == (4,)
    assert 1 <= scalars["effective_num_masks"] <= scalars["num_nonzero_weights"] <= 4


def test_logit_average_is_flagged_unnormalised():
    model = random_made(8, num_masks=4)
    strategy = LogitAverage()
    scalars = strategy.prepare(model)
    total = log_total_mass(lambda x: strategy.log_prob(model, x)["unnormalised_log_prob"], model)
    out = strategy.log_prob(model, valid_data(model, 20))
    assert not strategy.normalised
    assert abs(math.exp(total) - 1) > 1e-3
    assert scalars["log_total_mass"] == pytest.approx(total)
    assert set(out) == {"unnormalised_log_prob"}  # no "log_prob" that could pass for a test NLL


def test_mixture_beats_mean_single_mask_nll():
    """Jensen: log mean_k p_k >= mean_k log p_k for every example."""
    model = random_made(20, num_masks=8, hidden_sizes=[64])
    generator = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(5, 20, generator=generator) < 0.5).double()
    flips = (torch.rand(400, 20, generator=generator) < 0.1).double()
    data = (prototypes[torch.randint(5, (400,), generator=generator)] + flips) % 2
    per_mask = mask_log_probs(model, data, [model.mask(k) for k in range(8)])
    mixture = mixture_log_prob(per_mask)
    assert (mixture >= per_mask.mean(0) - 1e-12).all()
    assert -mixture.mean() <= -per_mask.mean()


def test_best_single_picks_best_validation_mask():
    model = random_made(10, num_masks=4)
    valid = valid_data(model)
    strategy = BestSingle()
    scalars = strategy.prepare(model, valid)
    valid_nll = -mask_log_probs(model, valid, [model.mask(k) for k in range(4)]).mean(1)
    out = strategy.log_prob(model, valid)
    assert strategy.best_mask == int(valid_nll.argmin())
    assert scalars["best_valid_nll"] == pytest.approx(float(valid_nll.min()))
    assert out["mask_log_probs"].shape == (4, 300)
    torch.testing.assert_close(out["log_prob"], out["mask_log_probs"][strategy.best_mask])


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda path: path.stem)
def test_config_instantiates(path):
    strategy = hydra.utils.instantiate(compose_ensemble(path.stem, []))
    assert strategy.name == path.stem
    assert callable(strategy.prepare) and callable(strategy.log_prob)
