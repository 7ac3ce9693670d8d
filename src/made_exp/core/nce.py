"""Noise-contrastive estimation (Gutmann & Hyvärinen, 2012) of the product of experts, log Z a learned scalar.

The model is ``log PoE(x) = log GM_θ(x) - c`` with c trained beside θ as the estimate of log Z (starting, at the
first step, from the importance-sampling estimate the first noise draws give). The noise q is the uniform mixture
of a frozen snapshot of the same bank (exact samples, exact log q), copied from the network every
``refresh_steps`` steps so that it stays near the data. With ν noise draws per example,

    J(θ, c) = -E_data[log σ(G(x))] - ν E_q[log σ(-G(y))],    G(u) = log GM_θ(u) - c - log q(u) - log ν,

and each step's loss, from a minibatch and ν B fresh noise draws, is an unbiased estimate of J and its gradient
(q does not depend on θ or c). No importance weight appears: the noise terms are weighted by σ(G(y)) <= 1.
Bias: NCE is a consistent estimator of a well-specified model (Gutmann & Hyvärinen, Theorem 2), so c → log Z
only where GM_θ / e^c can match the data; otherwise c is the normaliser NCE prefers, off log Z by the model's
misfit (up to 0.4 nats in tests/test_log_z_estimators.py's D = 12 run), and it lags a fast-moving log Z by
what the optimiser moves it a step. The run's final AIS score is the number to report. When the classifier
separates data from noise almost perfectly (``classifier_accuracy`` near 1) the gradients vanish: the noise is
too far from the data.

The loss's *value* is ``-mean log GM(x) + c``, the NLL under the learned normaliser; its gradient is J's.
Cost per step: ν B mixture samples from the snapshot, K snapshot passes over data and noise, K passes with
gradient over data and noise.

Examples:
    >>> from made_exp.core.made import MADE
    >>> model = MADE(input_dim=6, hidden_sizes=[16], num_masks=3)
    >>> nce = NoiseContrastiveLogZ(model, noise_ratio=2)
    >>> loss, stats = nce.loss(model, torch.ones(4, 6), [model.mask(k) for k in range(3)])
    >>> loss.backward()
    >>> sorted(stats)
    ['classifier_accuracy', 'log_z', 'noise_effective_sample_fraction', 'noise_log_z', 'unnormalised_nll']
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import logsigmoid

from made_exp.core.ais import summarise_log_weights
from made_exp.core.made import MADE, Mask
from made_exp.core.sampling import sample_mixture
from made_exp.core.scoring import mask_log_probs, mixture_log_prob, per_mask_log_probs, product_log_prob

__all__ = ["NoiseContrastiveLogZ", "nce_objective"]


def nce_objective(log_gm_data: Tensor, log_q_data: Tensor, log_gm_noise: Tensor, log_q_noise: Tensor, log_z: Tensor):
    """(B,), (B,), (M,), (M,) log GM and log q of data and noise, scalar c -> scalar J (noise ratio ν = M / B)."""
    log_ratio = math.log(len(log_gm_noise) / len(log_gm_data))
    data_logit = log_gm_data - log_z - log_q_data - log_ratio
    noise_logit = log_gm_noise - log_z - log_q_noise - log_ratio
    return -logsigmoid(data_logit).mean() - logsigmoid(-noise_logit).sum() / len(log_gm_data)


class NoiseContrastiveLogZ(nn.Module):
    """NCE for the normalised product of ``model``'s bank masks: a learned ``log_z`` and a frozen noise snapshot.

    Args:
        model: the MADE being trained; the snapshot starts as a copy of it.
        noise_ratio: ν, noise draws per data example.
        refresh_steps: steps between copies of the network into the snapshot.
        log_z_scale: c is this times a raw parameter, so that an optimiser whose steps are about lr in size
            (Adam) moves c that much faster than a weight: log Z travels nats while the weights settle.
    """

    def __init__(self, model: MADE, noise_ratio: int = 4, refresh_steps: int = 10, log_z_scale: float = 10.0):
        super().__init__()
        if noise_ratio < 1 or refresh_steps < 1:
            raise ValueError(f"noise_ratio and refresh_steps must be >= 1, got {noise_ratio} and {refresh_steps}")
        if log_z_scale <= 0:
            raise ValueError(f"log_z_scale must be > 0, got {log_z_scale}")
        self.noise_ratio, self.refresh_steps, self.log_z_scale = noise_ratio, refresh_steps, log_z_scale
        self.raw_log_z = nn.Parameter(torch.zeros(()))
        self.snapshot = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # steps taken; c starts at the first

    @property
    def log_z(self) -> Tensor:
        """c, the learned estimate of log Z (a scalar tensor with gradient)."""
        return self.log_z_scale * self.raw_log_z

    @torch.no_grad()
    def refresh(self, model: MADE) -> None:
        """Copy the network's parameters into the noise snapshot."""
        self.snapshot.load_state_dict(model.state_dict())

    def loss(
        self, model: MADE, x: Tensor, masks: Sequence[Mask], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """x: (B, D) -> (scalar with value -mean log GM(x) + c and gradient that of J, stats).

        Stats: ``log_z`` (c), ``unnormalised_nll``, ``noise_log_z`` (importance-sampling estimate of log Z
        from the noise draws, a check on c) and its ``noise_effective_sample_fraction``, and
        ``classifier_accuracy`` (data with G > 0 and noise with G < 0, over both).
        """
        if int(self.steps) % self.refresh_steps == 0:
            self.refresh(model)
        self.steps += 1
        noise = sample_mixture(self.snapshot, masks, self.noise_ratio * len(x), generator)
        log_q_data = mixture_log_prob(mask_log_probs(self.snapshot, x, masks))
        log_q_noise = mixture_log_prob(mask_log_probs(self.snapshot, noise, masks))
        log_gm = product_log_prob(per_mask_log_probs(model, torch.cat([x, noise]), masks))
        log_gm_data, log_gm_noise = log_gm[: len(x)], log_gm[len(x) :]
        noise_log_z, _, noise_ess = summarise_log_weights(log_gm_noise.detach() - log_q_noise)
        if int(self.steps) == 1:  # start c at the importance-sampling estimate (the snapshot is the network now)
            with torch.no_grad():
                self.raw_log_z.fill_(noise_log_z / self.log_z_scale)
        objective = nce_objective(log_gm_data, log_q_data, log_gm_noise, log_q_noise, self.log_z)
        unnormalised_nll = -log_gm_data.mean()
        value = (unnormalised_nll + self.log_z).detach()
        stats = {
            "log_z": float(self.log_z.detach()),
            "unnormalised_nll": float(unnormalised_nll.detach()),
            "noise_log_z": noise_log_z,
            "noise_effective_sample_fraction": noise_ess / len(noise),
            "classifier_accuracy": self._accuracy(log_gm_data, log_q_data, log_gm_noise, log_q_noise),
        }
        return objective - objective.detach() + value, stats

    @torch.no_grad()
    def _accuracy(self, log_gm_data: Tensor, log_q_data: Tensor, log_gm_noise: Tensor, log_q_noise: Tensor) -> float:
        threshold = self.log_z.detach() + math.log(self.noise_ratio)
        right = (log_gm_data - log_q_data > threshold).sum() + (log_gm_noise - log_q_noise < threshold).sum()
        return float(right) / (len(log_gm_data) + len(log_gm_noise))
