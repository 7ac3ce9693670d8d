"""The poe objective's smc and nce estimators of log Z against enumeration (D <= 16, K = 4): their MCMC moves
leave the product invariant, their gradients are consistent (smc) or unbiased (nce) as stated, and their log Z
tracks the exact one through a short training run."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_made
from made_exp.core.ais import mh_log_acceptance, score_states
from made_exp.core.made import MADE
from made_exp.core.masks import MaskSchedule
from made_exp.core.nce import NoiseContrastiveLogZ, nce_objective
from made_exp.core.normaliser import poe_log_z_exact
from made_exp.core.objectives import estimator_degraded, exact_log_z_gradient
from made_exp.core.sampling import sample_mixture, sample_poe_exact
from made_exp.core.scoring import binary_states, mask_log_probs, mixture_log_prob, product_log_prob
from made_exp.core.smc import ParticleLogZ, move_particles, systematic_resample
from test_sampling import assert_chi_squared_fits


def bank(input_dim: int, num_masks: int = 4, seed: int = 0):
    model = random_made(input_dim, num_masks=num_masks, seed=seed)
    return model, [model.mask(k) for k in range(num_masks)]


def flat(gradients) -> torch.Tensor:
    return torch.cat([g.flatten() for g in gradients])


def estimated_gradient(model, term: torch.Tensor) -> torch.Tensor:
    return flat(torch.autograd.grad(term, list(model.parameters()), allow_unused=False))


# ---- smc


def test_systematic_resampling_copies_each_particle_floor_or_ceil_of_its_expected_count():
    weights = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625])
    for seed in range(20):
        index = systematic_resample(weights.log(), torch.Generator().manual_seed(seed))
        counts = torch.bincount(index, minlength=5).double()
        expected = weights.double() * 5
        assert ((counts == expected.floor()) | (counts == expected.ceil())).all(), (counts, expected)


def test_the_mh_move_leaves_the_product_invariant_exactly():
    """The transition matrix of one independence-MH step at inverse temperature 1, enumerated."""
    model, masks = bank(6)
    states = score_states(model, masks, binary_states(6, 0, 64, torch.float64, "cpu"))
    target = torch.softmax(states.log_mixture + states.log_ratio, dim=0)  # GM / Z
    proposal = states.log_mixture.exp()
    accept = mh_log_acceptance(states.log_ratio[:, None], states.log_ratio[None, :], 1.0).exp()
    matrix = proposal[None, :] * accept
    matrix[range(64), range(64)] += 1 - matrix.sum(1)
    torch.testing.assert_close(target @ matrix, target, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mh_steps,gibbs_sweeps", [(3, 0), (0, 1)])
def test_the_moves_keep_exact_product_samples_exact(mh_steps, gibbs_sweeps):
    model, masks = bank(6)
    exact = sample_poe_exact(model, masks, 20000, torch.Generator().manual_seed(1))
    moved, _ = move_particles(model, masks, score_states(model, masks, exact), mh_steps, gibbs_sweeps)
    everything = score_states(model, masks, binary_states(6, 0, 64, torch.float64, "cpu"))
    assert_chi_squared_fits(moved.x, torch.softmax(everything.log_mixture + everything.log_ratio, dim=0))


def test_the_particle_gradient_of_log_z_is_consistent():
    """At fixed parameters, after the particles have moved for a few steps, the gradient half's estimate of
    ∇ log Z approaches the enumerated one as S grows."""
    model, masks = bank(10)
    exact = flat(exact_log_z_gradient(model, masks, poe_log_z_exact(model, masks)))

    def error(num_particles: int, seed: int) -> float:
        particles, generator = ParticleLogZ(10, num_particles), torch.Generator().manual_seed(seed)
        for _ in range(3):
            _, term, _ = particles.log_z_term(model, masks, generator)
        return float((estimated_gradient(model, term) - exact).norm() / exact.norm())

    small = sum(error(100, seed) for seed in range(4)) / 4
    large = sum(error(6400, seed) for seed in range(4)) / 4
    assert large < 0.1 and large < small / 3, (small, large)


def training_run(estimator: str, input_dim: int = 12, steps: int = 150) -> list[tuple[float, float]]:
    """(estimated, exact) log Z at every 10th step of Adam on data from a sharp teacher MADE, K = 4."""
    teacher = random_made(input_dim, num_masks=1, seed=9)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.mul_(2)
    data = sample_mixture(teacher, [teacher.mask(0)], 2000, torch.Generator().manual_seed(1)).float()
    model = MADE(input_dim, [64], num_masks=4, seed=0)
    schedule = MaskSchedule("cycle", "poe", log_z=estimator, log_z_samples=600)
    state = schedule.log_z_estimator(model)
    parameters = [p for p in [*model.parameters(), *state.parameters()] if p.requires_grad]
    optimizer, generator = torch.optim.Adam(parameters, lr=3e-3), torch.Generator().manual_seed(2)
    masks, track = [model.mask(k) for k in range(4)], []
    for step in range(steps):
        exact = poe_log_z_exact(model, masks)
        batch = data[torch.randint(0, len(data), (100,), generator=generator)]
        loss, stats = schedule.loss(model, batch, list(range(4)), None, model.generator, None, state)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            track.append((stats["log_z"], exact))
    return track


@pytest.mark.parametrize("estimator,tolerance", [("smc", 0.1), ("nce", 0.5)])
def test_the_training_log_z_tracks_the_exact_one(estimator, tolerance):
    """smc within 0.1 nats; nce's learned c within 0.5: it is the normaliser NCE prefers for a misspecified
    model, and it lags (core/nce.py), which the importance-sampling check it logs does not."""
    track = training_run(estimator)
    assert track[-1][1] < -0.3  # the product has moved away from the mixture (Z = 1 at the start)
    gaps = [abs(estimated - exact) for estimated, exact in track]
    assert max(gaps) < tolerance, track


def test_the_particles_survive_a_checkpoint():
    """A ParticleLogZ loaded from another's state_dict continues exactly as the original (bitwise resume)."""
    model, masks = bank(8)
    original = ParticleLogZ(8, 50)
    original.log_z_term(model, masks, torch.Generator().manual_seed(0))
    copy = ParticleLogZ(8, 50)
    copy.load_state_dict(original.state_dict())
    first = original.log_z_term(model, masks, torch.Generator().manual_seed(1))
    second = copy.log_z_term(model, masks, torch.Generator().manual_seed(1))
    assert first[0] == second[0] and first[2] == second[2]


# ---- nce


def test_the_nce_loss_is_an_unbiased_estimate_of_the_objective_and_its_gradient():
    """Against J with its noise expectation enumerated over all 2^D states: averaged over noise draws, the
    sampled objective's gradient in θ and c matches."""
    model, masks = bank(7)
    noise_model, _ = bank(7, seed=3)
    data = sample_mixture(model, masks, 20, torch.Generator().manual_seed(0))
    log_z = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    states = binary_states(7, 0, 128, torch.float64, "cpu")
    log_q_states = mixture_log_prob(mask_log_probs(noise_model, states, masks))
    log_q_data = mixture_log_prob(mask_log_probs(noise_model, data, masks))
    ratio = 50  # noise draws per example

    def gradient(objective):
        return flat(torch.autograd.grad(objective, [*model.parameters(), log_z]))

    log_gm = product_log_prob(torch.stack([_log_prob(model, m, data) for m in masks]))
    log_gm_states = product_log_prob(torch.stack([_log_prob(model, m, states) for m in masks]))
    data_logit = log_gm - log_z - log_q_data - math.log(ratio)
    state_logit = log_gm_states - log_z - log_q_states - math.log(ratio)
    exact_objective = (
        -torch.nn.functional.logsigmoid(data_logit).mean()
        - ratio * (log_q_states.exp() * torch.nn.functional.logsigmoid(-state_logit)).sum()
    )
    exact = gradient(exact_objective)
    generator, sampled = torch.Generator().manual_seed(1), []
    for _ in range(40):
        noise = sample_mixture(noise_model, masks, ratio * len(data), generator)
        log_gm = product_log_prob(torch.stack([_log_prob(model, m, data) for m in masks]))
        log_gm_noise = product_log_prob(torch.stack([_log_prob(model, m, noise) for m in masks]))
        log_q_noise = mixture_log_prob(mask_log_probs(noise_model, noise, masks))
        sampled.append(gradient(nce_objective(log_gm, log_q_data, log_gm_noise, log_q_noise, log_z)))
    mean = torch.stack(sampled).mean(0)
    assert float((mean - exact).norm() / exact.norm()) < 0.02


def _log_prob(model, mask, x):
    model.set_mask(mask)
    return model.log_prob(x)


def test_the_learned_log_z_converges_to_the_exact_one_when_the_model_is_right():
    """θ fixed, data drawn exactly from the product itself: NCE's optimal c is log Z."""
    model, masks = bank(8)
    model.requires_grad_(False)
    data = sample_poe_exact(model, masks, 4000, torch.Generator().manual_seed(0))
    nce = NoiseContrastiveLogZ(model, noise_ratio=4, refresh_steps=10**9).double()
    optimizer, generator = torch.optim.Adam([nce.raw_log_z], lr=2e-2), torch.Generator().manual_seed(1)
    for _ in range(300):
        batch = data[torch.randint(0, len(data), (200,), generator=generator)]
        loss, _ = nce.loss(model, batch, masks, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(float(nce.log_z) - poe_log_z_exact(model, masks)) < 0.1


def test_the_noise_snapshot_follows_the_network_every_refresh_steps():
    model, masks = bank(6)
    nce = NoiseContrastiveLogZ(model, refresh_steps=3).double()
    data = sample_mixture(model, masks, 10, torch.Generator().manual_seed(0))
    for step in range(4):
        with torch.no_grad():
            model.output.bias.add_(1.0)
        nce.loss(model, data, masks)
        in_step = torch.equal(nce.snapshot.output.bias, model.output.bias)
        assert in_step == (step % 3 == 0), step


# ---- degradation


@pytest.mark.parametrize(
    "stats,why",
    [
        ({"effective_sample_fraction": 0.6}, None),
        ({"effective_sample_fraction": 0.01}, "importance weights: ESS 1.0% of the samples"),
        ({"effective_sample_fraction": 0.6, "resampled": 1.0, "distinct_fraction": 0.5}, None),
        ({"effective_sample_fraction": 0.6, "resampled": 1.0, "distinct_fraction": 0.02}, "particles collapsed"),
        ({"classifier_accuracy": 0.8}, None),
        ({"classifier_accuracy": 0.995}, "noise too far"),
    ],
)
def test_each_estimator_says_when_it_degrades(stats, why):
    said = estimator_degraded(stats)
    assert said == why if why is None else said.startswith(why)
