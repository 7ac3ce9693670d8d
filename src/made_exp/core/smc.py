"""log Z of the product of experts during training from persistent weighted particles (an SMC sampler).

The self-normalised importance sampler of ``objectives.poe_loss`` draws fresh mixture samples every step and
weights them by GM/AM; once the product moves away from the mixture the weights are heavy-tailed and it
collapses (experiments/objectives_uci/poe_objective_log_z.md). Here S particles follow the product itself, as
in the SMC samplers of Del Moral, Doucet & Jasra (2006) with the sequence of targets ``PoE_θt`` set by training:

- start: S draws of the uniform mixture, log weights ``log GM(x) - log AM(x)`` (plain importance sampling);
- every step t, with the parameters θ_t: reweight each particle by ``GM_θt(x) / GM_θ{t-1}(x)``, the ratio of
  the new and the old unnormalised products. A step of the optimiser changes θ a little, so the weights change a
  little, unlike GM/AM. The first half of the particles gives ``∇ log Z ≈ sum_s W̄_s ∇ log GM_θt(x_s)``
  (``W̄`` its normalised weights); log Z moves by ``log sum_s W̄_s GM_θt(x_s) / GM_θ{t-1}(x_s)`` over the
  second half, which no update was ever computed from. An update lowers GM where the particles that gave it
  are, so with one set for both the estimate drifted low, by tens of nats on dna within ten epochs;
- then each half is resampled within itself when its ESS ``(sum W)^2 / sum W^2`` falls below
  ``resample_below`` x its size (systematic resampling, every weight set to the mean), and every particle moves
  by MCMC that leaves ``PoE_θt`` invariant (``ais.mh_step`` with mixture proposals and ``ais.gibbs_sweep``, at
  inverse temperature 1): the weights stay valid, and the particles follow the product's mass as it moves.

Bias: the gradient is a self-normalised estimate, biased by O(1/S) and consistent as S grows. log Z is a
product of per-step ratio estimates, each unbiased for a fixed sequence of targets: its log is biased low by
half its variance, which accumulates over the steps, and it is right only while the particles cover the
product's mass (when the moves cannot follow it, ``distinct_fraction``, distinct particles / S after a move,
falls). The targets depend on the particles through training, so the estimator is consistent, not unbiased.

Cost per step: K passes over the S particles with gradient, then ``mh_steps`` x (S mixture samples + K passes)
+ ``gibbs_sweeps`` x D x K passes for the moves (the importance sampler draws S mixture samples every step).

Examples:
    >>> from made_exp.core.made import MADE
    >>> model = MADE(input_dim=6, hidden_sizes=[16], num_masks=3)
    >>> particles = ParticleLogZ(input_dim=6, num_particles=100)
    >>> log_z, gradient_term, stats = particles.log_z_term(model, [model.mask(k) for k in range(3)])
    >>> float(gradient_term)  # zero-valued: its gradient is the estimate of ∇ log Z
    0.0
    >>> sorted(stats)
    ['distinct_fraction', 'effective_sample_fraction', 'effective_sample_size', 'move_acceptance', 'resampled']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from made_exp.core.ais import ChainState, gibbs_sweep, mh_step, score_states, summarise_log_weights
from made_exp.core.made import MADE, Mask
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import mixture_log_prob, per_mask_log_probs, poe_log_weights, product_log_prob

__all__ = ["ParticleLogZ", "systematic_resample", "move_particles"]


def systematic_resample(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(S,) log weights -> (S,) indices, particle s copied about S W̄_s times (one uniform for all S)."""
    num = len(log_weights)
    cumulative = torch.softmax(log_weights.double(), dim=0).cpu().cumsum(0)
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    positions = (torch.arange(num, dtype=torch.float64) + offset) / num
    return torch.searchsorted(cumulative, positions).clamp(max=num - 1).to(log_weights.device)


@torch.no_grad()
def move_particles(
    model: MADE,
    masks: Sequence[Mask],
    state: ChainState,
    mh_steps: int,
    gibbs_sweeps: int,
    generator: torch.Generator | None = None,
) -> tuple[ChainState, float]:
    """MCMC leaving the product of experts invariant -> (moved state, mean MH acceptance; nan without MH).

    ``mh_steps`` independence Metropolis-Hastings steps with uniform-mixture proposals, then ``gibbs_sweeps``
    systematic Gibbs sweeps, each exact for ``GM`` (inverse temperature 1 in ``made_exp.core.ais``).
    """
    accepted = 0
    for _ in range(mh_steps):
        state, step_accepted = mh_step(model, masks, state, 1.0, generator)
        accepted += int(step_accepted.sum())
    for _ in range(gibbs_sweeps):
        state = gibbs_sweep(model, masks, state, 1.0, generator)
    return state, accepted / (mh_steps * len(state.x)) if mh_steps else math.nan


class ParticleLogZ(nn.Module):
    """S weighted particles (S, D) that follow the product of experts from step to step (see module docstring).

    The particles, their log weights, the log GM they were weighted with and the running log Z are buffers: they
    are saved in checkpoints, so a resumed run continues the same particle system.

    Args:
        input_dim: D.
        num_particles: S (at least 2: half give the gradient, the other half the step's log Z increment).
        resample_below: resample when ESS / S falls below this (in (0, 1]).
        mh_steps: independence MH steps with mixture proposals every step.
        gibbs_sweeps: Gibbs sweeps every step (D x K passes each).
    """

    def __init__(
        self, input_dim: int, num_particles: int, resample_below: float = 0.5, mh_steps: int = 2, gibbs_sweeps: int = 0
    ):
        super().__init__()
        if num_particles < 2:
            raise ValueError(f"num_particles must be >= 2, got {num_particles}")
        if not 0 < resample_below <= 1:
            raise ValueError(f"resample_below must be in (0, 1], got {resample_below}")
        if mh_steps < 0 or gibbs_sweeps < 0:
            raise ValueError("mh_steps and gibbs_sweeps must be >= 0")
        self.resample_below, self.mh_steps, self.gibbs_sweeps = resample_below, mh_steps, gibbs_sweeps
        self.register_buffer("particles", torch.zeros(num_particles, input_dim))
        self.register_buffer("log_weights", torch.zeros(num_particles, dtype=torch.float64))
        self.register_buffer("log_gm", torch.zeros(num_particles, dtype=torch.float64))
        self.register_buffer("log_z", torch.zeros((), dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @property
    def num_particles(self) -> int:
        return len(self.particles)

    @torch.no_grad()
    def start(self, model: MADE, masks: Sequence[Mask], generator: torch.Generator | None = None) -> None:
        """S draws of the uniform mixture, weighted by GM / AM: importance sampling for the first step."""
        state = score_states(model, masks, sample_mixture(model, masks, self.num_particles, generator))
        self.log_z.fill_(summarise_log_weights(state.log_ratio)[0])
        self._keep(state, state.log_ratio)
        self.started.fill_(True)

    def _keep(self, state: ChainState, log_weights: Tensor) -> None:
        self.particles.copy_(state.x)
        self.log_weights.copy_(log_weights)
        self.log_gm.copy_(state.log_mixture + state.log_ratio)

    def log_z_term(
        self, model: MADE, masks: Sequence[Mask], generator: torch.Generator | None = None
    ) -> tuple[float, Tensor, dict[str, float]]:
        """(log Z_t, zero-valued scalar whose gradient is the estimate of ∇ log Z at θ_t, stats).

        Reweights the particles to the current parameters. The first half of the particles gives the gradient;
        log Z moves by the weighted mean ratio GM_θt / GM_θ{t-1} over the second half only, which no update
        (nor the optimiser's momentum) was ever computed from: an update lowers GM where its particles are, so
        their ratios would drift log Z low. Each half is then resampled on its own when its ESS is low, and
        every particle is moved. Stats: ``effective_sample_size`` of the gradient half and its fraction of
        S / 2 (before resampling), ``resampled`` (halves resampled this step), ``move_acceptance`` and
        ``distinct_fraction`` (distinct particles / S after the move).
        """
        if not bool(self.started):
            self.start(model, masks, generator)
        # the graph keeps its own copy (the move below rewrites the buffer), in the network's dtype
        particles = self.particles.to(model.output.weight.dtype, copy=True)
        per_mask = per_mask_log_probs(model, particles, masks)  # (K, S), with gradient
        log_gm = product_log_prob(per_mask)
        increment = log_gm.detach().double() - self.log_gm
        log_weights = self.log_weights + increment
        gradient, tracking = self._halves()
        self.log_z += torch.logsumexp(log_weights[tracking], 0) - torch.logsumexp(self.log_weights[tracking], 0)
        normalised = torch.softmax(log_weights[gradient], dim=0).to(log_gm)
        surrogate = (normalised * log_gm[gradient]).sum()
        ess = summarise_log_weights(log_weights[gradient])[2]
        stats = {"effective_sample_size": ess, "effective_sample_fraction": ess / (self.num_particles // 2)}
        scored = per_mask.detach().double()  # the moves start from these scores: no second K passes
        state = ChainState(particles.detach(), mixture_log_prob(scored), poe_log_weights(scored))
        stats.update(self._resample_and_move(model, masks, state, log_weights, generator))
        return float(self.log_z), surrogate - surrogate.detach(), stats

    def _halves(self) -> tuple[slice, slice]:
        """The particles that give the gradient, and those that track log Z."""
        half = self.num_particles // 2
        return slice(0, half), slice(half, self.num_particles)

    @torch.no_grad()
    def _resample_and_move(
        self,
        model: MADE,
        masks: Sequence[Mask],
        state: ChainState,
        log_weights: Tensor,
        generator: torch.Generator | None,
    ) -> dict[str, float]:
        """Resample each half whose ESS is low, within itself, then move every particle with MCMC at the current
        parameters (the weights, valid for the current product, stay valid under a kernel that leaves it
        invariant)."""
        index, log_weights, resampled = torch.arange(self.num_particles), log_weights.clone(), 0
        for part in self._halves():
            size = part.stop - part.start
            if summarise_log_weights(log_weights[part])[2] < self.resample_below * size:
                index[part] = part.start + systematic_resample(log_weights[part], generator).cpu()
                log_weights[part] = torch.logsumexp(log_weights[part], 0) - math.log(size)
                resampled += 1
        index = index.to(state.x.device)
        state = ChainState(state.x[index], state.log_mixture[index], state.log_ratio[index])
        state, acceptance = move_particles(model, masks, state, self.mh_steps, self.gibbs_sweeps, generator)
        self._keep(state, log_weights)
        distinct = len(torch.unique(state.x, dim=0)) / self.num_particles
        return {"resampled": float(resampled), "move_acceptance": acceptance, "distinct_fraction": distinct}
