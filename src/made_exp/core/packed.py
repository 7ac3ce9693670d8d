"""Many same-shape MADEs run as one batched model: a leading member dimension and batched matmuls.

Each member stays its own ``MADE`` (parameters, mask bank, generator, current mask). ``packed_logits`` stacks the
members' masked weights and runs every layer as one ``baddbmm`` over the members, so N small forward and backward
passes cost one sequence of kernel launches. Gradients flow back through the stack into each member's own
parameters: member n's gradient is that of its own loss alone, up to the summation order inside the batched GEMM.

Examples:
    >>> members = [MADE(input_dim=6, hidden_sizes=[16], seed=seed) for seed in range(3)]
    >>> x = torch.randint(0, 2, (3, 5, 6)).float()  # member n scores its own minibatch x[n]
    >>> packed_log_prob(members, x).shape
    torch.Size([3, 5])
    >>> torch.allclose(packed_log_prob(members, x)[1], members[1].log_prob(x[1]), atol=1e-5)
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from made_exp.core.made import MADE, Mask, MaskedLinear, log_bernoulli

__all__ = ["shape_key", "packed_logits", "packed_log_prob", "packed_mixture_log_prob"]


def shape_key(model: MADE) -> tuple:
    """What members must share to be packed: D, hidden widths, activation, direct connections, mask conditioning."""
    return (
        model.input_dim,
        tuple(model.hidden_sizes),
        type(model.activation).__name__,
        model.direct_connection,
        len(model.input_skips),
        model.output.mask_weight is not None,
    )


def _packed_linear(layers: Sequence[MaskedLinear], x: Tensor) -> Tensor:
    """x: (N, B, in), row block n for layer n -> (N, B, out), each layer under its own current mask."""
    weight = torch.stack([layer.masked_weight() for layer in layers]).transpose(1, 2)  # (N, in, out)
    if layers[0].bias is None:
        out = torch.bmm(x, weight)
    else:
        out = torch.baddbmm(torch.stack([layer.bias for layer in layers]).unsqueeze(1), x, weight)
    if layers[0].mask_weight is not None:
        out = out + torch.stack([(layer.mask_weight * layer.mask).sum(1) for layer in layers]).unsqueeze(1)
    return out


def packed_logits(members: Sequence[MADE], x: Tensor) -> Tensor:
    """x: (N, B, D) in {0, 1}, member n's minibatch at x[n] -> (N, B, D) logits, as ``MADE.forward`` per member."""
    if x.dim() != 3 or x.shape[0] != len(members):
        raise ValueError(f"x should be ({len(members)}, B, D), one minibatch per member; got {tuple(x.shape)}")
    first = members[0]
    h = x
    for index in range(len(first.hidden)):
        pre = _packed_linear([member.hidden[index] for member in members], h)
        if index > 0 and first.input_skips:
            pre = pre + _packed_linear([member.input_skips[index - 1] for member in members], x)
        h = first.activation(pre)
    logits = _packed_linear([member.output for member in members], h)
    if first.direct is not None:
        logits = logits + _packed_linear([member.direct for member in members], x)
    return logits


def packed_log_prob(members: Sequence[MADE], x: Tensor) -> Tensor:
    """x: (N, B, D) -> (N, B) log p(x) in nats, member n's model under its current mask scoring x[n]."""
    return log_bernoulli(packed_logits(members, x), x)


@torch.no_grad()
def packed_mixture_log_prob(members: Sequence[MADE], masks: Sequence[Sequence[Mask]], x: Tensor) -> Tensor:
    """x: (N, B, D) -> (N, B) log of member n's uniform mixture over ``masks[n]`` (M masks each), as
    ``scoring.mixture_log_prob`` of each member's ``mask_log_probs``; every member's mask is restored after."""
    if len({len(member_masks) for member_masks in masks}) != 1:
        raise ValueError("every member needs the same number of masks")
    rows = []
    with contextlib.ExitStack() as restore, contextlib.ExitStack() as caches:
        for member in members:
            restore.enter_context(member.using_mask())
            caches.enter_context(member.cache_masked_weights())
        for step_masks in zip(*masks, strict=True):  # the j-th mask of every member
            for member, mask in zip(members, step_masks, strict=True):
                member.set_mask(mask)
            rows.append(packed_log_prob(members, x))
    return torch.logsumexp(torch.stack(rows), dim=0) - math.log(len(rows))
