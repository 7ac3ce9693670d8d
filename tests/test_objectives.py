"""Training objectives: the normalised product of experts (exact and importance-sampled gradients of log Z)
and the learned-weight mixture (against EM)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import random_made
from made_exp.core.ensemble import ProductOfExperts
from made_exp.core.objectives import MixtureWeights, learned_mixture_loss, poe_loss, subset_mixture_log_prob
from made_exp.core.sampling import sample_incremental, sample_mixture
from made_exp.core.scoring import (
    binary_states,
    fit_mixture_weights,
    map_objective,
    mask_log_probs,
    mixture_log_prob,
    per_mask_log_probs,
    product_log_prob,
)


def model_and_data(input_dim: int = 8, num_masks: int = 3, num_examples: int = 64):
    model = random_made(input_dim, num_masks=num_masks)
    masks = [model.mask(k) for k in range(num_masks)]
    return model, masks, sample_mixture(model, masks, num_examples, torch.Generator().manual_seed(5))


def flat_gradient(loss: torch.Tensor, model) -> torch.Tensor:
    """The gradient of ``loss`` with respect to every parameter of ``model``, flattened (zeros where unused)."""
    parameters = list(model.parameters())
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(parameters, grads, strict=True)]
    )


def enumerated_poe_nll(model, masks, x) -> torch.Tensor:
    """-mean log GM(x) + log Z, log Z by autograd through the logsumexp over all 2^D states at once."""
    states = binary_states(model.input_dim, 0, 2**model.input_dim, torch.float64, "cpu")
    log_z = torch.logsumexp(product_log_prob(per_mask_log_probs(model, states, masks)), dim=0)
    return -product_log_prob(per_mask_log_probs(model, x, masks)).mean() + log_z


def test_per_mask_log_probs_matches_scoring_and_carries_gradients():
    model, masks, x = model_and_data()
    model.set_mask(2)
    log_probs = per_mask_log_probs(model, x, masks[:2])
    torch.testing.assert_close(log_probs.detach(), mask_log_probs(model, x, masks[:2]))
    assert log_probs.requires_grad
    assert torch.equal(model.current_mask.ordering, masks[2].ordering)  # the caller's mask is restored


@pytest.mark.parametrize("chunk_size", [50, 16384])
def test_exact_poe_loss_gradient_equals_autograd_of_enumerated_log_z(chunk_size):
    model, masks, x = model_and_data()
    loss, stats = poe_loss(model, x, masks, log_z="exact", chunk_size=chunk_size)
    reference = enumerated_poe_nll(model, masks, x)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-12)
    gradient, expected = flat_gradient(loss, model), flat_gradient(reference, model)
    assert expected.norm() > 1  # a gradient that is not trivially small
    torch.testing.assert_close(gradient, expected, rtol=1e-9, atol=1e-10)
    assert stats["log_z"] < 0


def test_exact_poe_loss_is_the_nll_the_product_of_experts_scores():
    model, masks, x = model_and_data()
    loss, stats = poe_loss(model, x, list(range(len(masks))), log_z="exact")  # bank indices work too
    scorer = ProductOfExperts(log_z_method="exact")
    scalars = scorer.prepare(model)
    assert stats["log_z"] == pytest.approx(scalars["log_z"], abs=1e-12)
    assert loss.item() == pytest.approx(-float(scorer.log_prob(model, x)["log_prob"].mean()), abs=1e-10)
    assert stats["unnormalised_nll"] == pytest.approx(-float(scorer.log_prob(model, x)["unnormalised_log_prob"].mean()))


def importance_gradient_error(model, masks, x, expected: torch.Tensor, num_samples: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    loss, _ = poe_loss(model, x, masks, log_z="importance", num_samples=num_samples, generator=generator)
    return float((flat_gradient(loss, model) - expected).norm())


def test_importance_gradient_approaches_the_exact_one():
    model, masks, x = model_and_data()
    expected = flat_gradient(poe_loss(model, x, masks, log_z="exact")[0], model)
    errors = {
        num_samples: sum(importance_gradient_error(model, masks, x, expected, num_samples, seed) for seed in (0, 1, 2))
        for num_samples in (50, 20000)
    }  # summed over three seeds
    assert errors[20000] < errors[50] / 5
    assert errors[20000] / 3 < 0.1 * float(expected.norm())


def test_importance_poe_loss_reports_its_log_z_and_ess():
    model, masks, x = model_and_data()
    exact_loss, exact_stats = poe_loss(model, x, masks, log_z="exact")
    loss, stats = poe_loss(model, x, masks, "importance", num_samples=4000, generator=torch.Generator().manual_seed(1))
    assert abs(stats["log_z"] - exact_stats["log_z"]) < 3 * stats["log_z_stderr"]
    assert loss.item() == pytest.approx(stats["unnormalised_nll"] + stats["log_z"], abs=1e-12)
    assert 1 <= stats["effective_sample_size"] < 4000
    assert stats["effective_sample_fraction"] == pytest.approx(stats["effective_sample_size"] / 4000)


def test_poe_loss_rejects_an_unknown_method():
    model, masks, x = model_and_data()
    with pytest.raises(ValueError, match="log_z='sir' is not one of exact, importance"):
        poe_loss(model, x, masks, log_z="sir")


def skewed_data(model, counts=(250, 150, 70, 30), seed: int = 0) -> torch.Tensor:
    """(sum counts, D) samples, counts[k] of them from mask k: a mixture with unequal weights."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([sample_incremental(model, model.mask(k), n, generator=generator) for k, n in enumerate(counts)])


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_learned_mixture_loss_is_minus_the_em_objective(alpha):
    model = random_made(10, num_masks=4)
    x = skewed_data(model)
    weights = MixtureWeights(4, alpha).double()
    with torch.no_grad():
        weights.logits.copy_(torch.tensor([0.5, -0.2, 0.1, -1.0]))
    loss, stats = learned_mixture_loss(model, weights, x)
    per_mask = mask_log_probs(model, x, [model.mask(k) for k in range(4)])
    log_weights = weights.log_weights().detach()
    assert loss.item() == pytest.approx(-map_objective(per_mask, log_weights, alpha), abs=1e-12)
    if alpha == 1:
        assert loss.item() == pytest.approx(-float(mixture_log_prob(per_mask, log_weights).mean()), abs=1e-12)
    assert 1 < stats["effective_num_masks"] < 4


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_gradient_descent_on_the_logits_finds_the_em_weights(alpha):
    model = random_made(10, num_masks=4)
    model.requires_grad_(False)
    x = skewed_data(model)
    per_mask = mask_log_probs(model, x, [model.mask(k) for k in range(4)])
    em_log_weights, _ = fit_mixture_weights(per_mask, alpha=alpha, max_iters=10000, tol=1e-13)
    weights = MixtureWeights(4, alpha).double()
    optimizer = torch.optim.Adam(weights.parameters(), lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        loss, _ = learned_mixture_loss(model, weights, x)
        loss.backward()
        optimizer.step()
    learned = weights.log_weights().detach()
    torch.testing.assert_close(learned.exp(), em_log_weights.exp(), rtol=0, atol=2e-4)
    assert loss.item() == pytest.approx(-map_objective(per_mask, em_log_weights, alpha), abs=1e-7)
    assert not torch.allclose(learned.exp(), torch.full((4,), 0.25, dtype=torch.float64), atol=0.05)


def test_subset_estimate_of_the_mixture_density_is_unbiased():
    """Averaged over every subset of S = 2 of K = 4 masks, (K/S) sum_s w_s p_s(x) is sum_k w_k p_k(x)."""
    model, masks, x = model_and_data(num_masks=4)
    per_mask = mask_log_probs(model, x, masks)
    log_weights = torch.log_softmax(torch.tensor([0.3, -0.5, 1.0, 0.0], dtype=torch.float64), dim=0)
    subsets = [list(subset) for subset in itertools.combinations(range(4), 2)]
    estimates = torch.stack([subset_mixture_log_prob(per_mask[s], log_weights[s], 4) for s in subsets])
    average = torch.logsumexp(estimates, dim=0) - math.log(len(subsets))
    torch.testing.assert_close(average, mixture_log_prob(per_mask, log_weights))
    assert (estimates.std(dim=0) > 1e-3).any()  # the single-subset estimates do vary


def test_sampled_masks_loss_is_the_subset_estimate_and_all_masks_is_exact():
    model, masks, x = model_and_data(num_masks=4)
    weights = MixtureWeights(4).double()
    with torch.no_grad():
        weights.logits.copy_(torch.tensor([0.3, -0.5, 1.0, 0.0]))
    full, _ = learned_mixture_loss(model, weights, x)
    everything, _ = learned_mixture_loss(model, weights, x, num_sampled=4)
    assert everything.item() == pytest.approx(full.item(), abs=1e-12)
    sampled, _ = learned_mixture_loss(model, weights, x, num_sampled=2, generator=torch.Generator().manual_seed(0))
    chosen = torch.randperm(4, generator=torch.Generator().manual_seed(0))[:2].tolist()
    per_mask = mask_log_probs(model, x, [masks[k] for k in chosen])
    expected = -subset_mixture_log_prob(per_mask, weights.log_weights().detach()[chosen], 4).mean()
    assert sampled.item() == pytest.approx(expected.item(), abs=1e-12)
    assert sampled.item() != pytest.approx(full.item())
    sampled.backward()
    assert weights.logits.grad.abs().sum() > 0 and model.output.weight.grad.abs().sum() > 0


def test_mixture_weights_start_uniform_and_reject_a_sparse_prior():
    weights = MixtureWeights(5)
    assert weights.effective_num_masks() == pytest.approx(5)
    assert weights.log_prior().item() == 0
    with pytest.raises(ValueError, match="alpha=0.5 < 1"):
        MixtureWeights(5, alpha=0.5)


def test_learned_mixture_loss_rejects_a_mismatched_bank_and_subset_size():
    model, _, x = model_and_data(num_masks=4)
    with pytest.raises(ValueError, match="3 mixture weights for a bank of 4 masks"):
        learned_mixture_loss(model, MixtureWeights(3).double(), x)
    with pytest.raises(ValueError, match="num_sampled=5"):
        learned_mixture_loss(model, MixtureWeights(4).double(), x, num_sampled=5)
