"""AIS for the product of experts' log Z: schedules, exact invariance of the transitions, agreement with enumeration."""

from __future__ import annotations

import pytest
import torch

import made_exp.core.ais as ais
from conftest import random_made
from made_exp.core.ais import (
    annealing_schedule,
    gibbs_sweep,
    mh_log_acceptance,
    mh_step,
    mixture_proposals,
    poe_log_z_ais,
    score_states,
)
from made_exp.core.normaliser import poe_log_z_exact, poe_log_z_importance
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import binary_states
from test_sampling import assert_chi_squared_fits


def model_and_masks(input_dim: int, num_masks: int = 4):
    model = random_made(input_dim, num_masks=num_masks)
    return model, [model.mask(k) for k in range(num_masks)]


def all_states(model, masks) -> ais.ChainState:
    """ChainState of every state of {0,1}^D, in the order of ``binary_states``."""
    return score_states(model, masks, binary_states(model.input_dim, 0, 2**model.input_dim, torch.float64, "cpu"))


def target_probabilities(state: ais.ChainState, beta: float) -> torch.Tensor:
    """(2^D,) f_b normalised, from the ChainState of every state."""
    return torch.softmax(state.log_f(beta), dim=0)


def wrong_rule(current, proposed, beta):
    """Targets the product of experts (b = 1) at every temperature: a plausible bug."""
    return (proposed - current).clamp(max=0)


@pytest.mark.parametrize("schedule", ["linear", "sigmoid"])
def test_schedule_runs_from_zero_to_one(schedule):
    betas = annealing_schedule(11, schedule)
    assert betas[0] == 0 and betas[-1] == 1
    assert (betas.diff() > 0).all()


def test_sigmoid_schedule_is_denser_near_the_ends():
    steps = annealing_schedule(101, "sigmoid").diff()
    assert steps[0] < steps[50] / 5 and steps[-1] < steps[50] / 5


@pytest.mark.parametrize("bad", [dict(num_temperatures=1), dict(schedule="cosine"), dict(sharpness=0.0)])
def test_schedule_rejects_bad_arguments(bad):
    args = dict(num_temperatures=5, schedule="sigmoid") | bad
    with pytest.raises(ValueError):
        annealing_schedule(**args)


def mh_transition_matrix(state: ais.ChainState, beta: float, rule) -> torch.Tensor:
    """(S, S) independence-MH transition matrix over all states: propose j with AM(j), accept with ``rule``."""
    proposal = state.log_mixture.exp()
    accept = rule(state.log_ratio[:, None], state.log_ratio[None, :], beta).exp()
    matrix = proposal[None, :] * accept
    matrix.fill_diagonal_(0)
    return matrix + torch.diag(1 - matrix.sum(1))


@pytest.mark.parametrize("beta", [0.3, 0.7, 1.0])
def test_mh_transition_matrix_leaves_intermediate_invariant(beta):
    state = all_states(*model_and_masks(6))
    target = target_probabilities(state, beta)
    matrix = mh_transition_matrix(state, beta, mh_log_acceptance)
    torch.testing.assert_close(matrix.sum(1), torch.ones_like(target))
    torch.testing.assert_close(target @ matrix, target, rtol=0, atol=1e-12)
    # the check has teeth: a rule that forgets the temperature leaves another distribution invariant
    if beta < 1:
        wrong = target @ mh_transition_matrix(state, beta, wrong_rule)
        assert (wrong - target).abs().max() > 1e-3


def exact_chains(model, masks, beta: float, num_chains: int, seed: int) -> ais.ChainState:
    """num_chains exact draws of f_b (by enumeration), scored."""
    everything = all_states(model, masks)
    generator = torch.Generator().manual_seed(seed)
    index = torch.multinomial(target_probabilities(everything, beta), num_chains, replacement=True, generator=generator)
    return score_states(model, masks, everything.x[index])


def test_mh_steps_from_the_mixture_converge_to_the_intermediate():
    """Ergodicity and invariance of the sampled transition: 30 MH steps from b = 0 reach f_b (χ², 32 states)."""
    model, masks = model_and_masks(5)
    beta, generator = 0.8, torch.Generator().manual_seed(0)
    state = score_states(model, masks, sample_mixture(model, masks, 20000, generator))
    target = target_probabilities(all_states(model, masks), beta)
    rates = []
    for _ in range(30):
        state, accepted = mh_step(model, masks, state, beta, generator)
        rates.append(float(accepted.double().mean()))
    assert 0.05 < min(rates) and max(rates) < 0.95
    assert_chi_squared_fits(state.x, target)
    torch.testing.assert_close(state.log_f(beta), score_states(model, masks, state.x).log_f(beta))


def test_gibbs_sweep_keeps_exact_samples_exact():
    model, masks = model_and_masks(5)
    beta = 0.5
    state = exact_chains(model, masks, beta, 20000, seed=1)
    before = state.x.clone()
    state = gibbs_sweep(model, masks, state, beta, torch.Generator().manual_seed(2))
    assert (state.x != before).any(dim=1).double().mean() > 0.2  # the sweep moves most chains
    assert_chi_squared_fits(state.x, target_probabilities(all_states(model, masks), beta))
    torch.testing.assert_close(state.log_ratio, score_states(model, masks, state.x).log_ratio)


def test_gibbs_sweeps_from_the_mixture_converge_to_the_product():
    model, masks = model_and_masks(5)
    generator = torch.Generator().manual_seed(3)
    state = score_states(model, masks, sample_mixture(model, masks, 20000, generator))
    for _ in range(5):
        state = gibbs_sweep(model, masks, state, 1.0, generator)
    assert_chi_squared_fits(state.x, target_probabilities(all_states(model, masks), 1.0))


def test_mixture_proposals_come_in_blocks_of_whole_steps():
    model, masks = model_and_masks(6)
    proposals = list(mixture_proposals(model, masks, 10, 7, 30, torch.Generator().manual_seed(0)))
    assert len(proposals) == 7 and all(p.x.shape == (10, 6) for p in proposals)
    # fresh draws at every step, within a block (3 steps of 10) and across blocks
    assert all(not torch.equal(a.x, b.x) for a, b in zip(proposals[:-1], proposals[1:], strict=True))
    torch.testing.assert_close(proposals[6].log_ratio, score_states(model, masks, proposals[6].x).log_ratio)


def test_two_temperatures_is_importance_sampling():
    model, masks = model_and_masks(8)
    result = poe_log_z_ais(model, masks, 500, 2, generator=torch.Generator().manual_seed(0))
    log_z, stderr = poe_log_z_importance(model, masks, 500, torch.Generator().manual_seed(0))
    assert result.log_z == pytest.approx(log_z, abs=1e-12)
    assert result.log_z_stderr == pytest.approx(stderr, rel=1e-9)


@pytest.mark.parametrize(
    "transitions",
    [dict(mh_steps=1), dict(mh_steps=0, gibbs_sweeps=1), dict(schedule="sigmoid"), dict(mh_steps=2, proposal_block=1)],
    ids=str,
)
def test_ais_agrees_with_enumeration(transitions):
    model, masks = model_and_masks(10)
    exact = poe_log_z_exact(model, masks)
    result = poe_log_z_ais(model, masks, 1000, 50, generator=torch.Generator().manual_seed(0), **transitions)
    assert exact < -1  # the masks disagree: far from the trivial Z = 1
    assert 0 < result.log_z_stderr < 0.05
    assert abs(result.log_z - exact) < 3 * result.log_z_stderr
    assert 1 <= result.effective_sample_size <= 1000
    assert result.log_weights.shape == (1000,)


def test_ais_check_catches_a_wrong_acceptance_rule(monkeypatch):
    model, masks = model_and_masks(10)
    exact = poe_log_z_exact(model, masks)
    monkeypatch.setattr(ais, "mh_log_acceptance", wrong_rule)
    result = poe_log_z_ais(model, masks, 1000, 50, generator=torch.Generator().manual_seed(0))
    assert abs(result.log_z - exact) > 10 * result.log_z_stderr


def test_ais_spread_shrinks_as_temperatures_grow():
    model, masks = model_and_masks(10)
    results = [poe_log_z_ais(model, masks, 1000, t, generator=torch.Generator().manual_seed(0)) for t in (2, 20, 200)]
    stderrs = [r.log_z_stderr for r in results]
    sizes = [r.effective_sample_size for r in results]
    assert stderrs[0] > stderrs[1] > stderrs[2] and stderrs[2] < stderrs[0] / 4
    assert sizes[0] < sizes[1] < sizes[2]
    assert 0.2 < results[-1].acceptance_rate < 0.8


def test_ais_rejects_bad_arguments():
    model, masks = model_and_masks(4)
    with pytest.raises(ValueError, match="num_chains"):
        poe_log_z_ais(model, masks, 0, 10)
