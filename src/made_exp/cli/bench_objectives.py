"""``made-bench --objectives``: what one training step of each ``masks=`` objective costs against a Jensen step.

One optimiser step (Adam, batch 100) of MADE 784-500-784 (binarized MNIST's size) under each objective: the Jensen
bound over a bank (``cycle``, one mask a step: the step every other objective is divided by), the mixture objective
(4 fresh masks a step), and, over all K bank masks every step, the learned-weight mixture and the normalised product
of experts with log Z by self-normalised importance sampling (S = 300 mixture samples a step, the drawing of
those samples timed alone too), by persistent particles (``log_z=smc``, S = 300, 2 MH moves a step) and by
noise-contrastive estimation (``log_z=nce``, 4 noise draws per example). K = 4 and 16. A step's cost does not
depend on the bits it is given, so the minibatches are random bits. The calls take turns
(``best_seconds_interleaved``): on a machine whose speed drifts, the ratios to the Jensen step still compare like
with like.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from made_exp.cli.timing import best_seconds_interleaved, timed_made
from made_exp.core.made import MADE
from made_exp.core.masks import MaskSchedule
from made_exp.core.objectives import MixtureWeights
from made_exp.core.sampling import sample_mixture

__all__ = ["schedules", "objective_steps", "run_objective_benchmarks"]


def schedules(log_z_samples: int) -> dict[str, MaskSchedule]:
    """Each objective as made-train's ``masks=`` option of that name sets it up (``jensen``: ``masks=cycle``)."""
    return {
        "jensen": MaskSchedule("cycle"),
        "mixture_objective": MaskSchedule("fresh", "mixture", samples_per_step=4),
        "learned_mixture_objective": MaskSchedule("cycle", "learned_mixture"),
        "poe_objective": MaskSchedule("cycle", "poe", log_z="importance", log_z_samples=log_z_samples),
        "poe_objective_smc": MaskSchedule("cycle", "poe", log_z="smc", log_z_samples=log_z_samples),
        "poe_objective_nce": MaskSchedule("cycle", "poe", log_z="nce"),
    }


def objective_steps(
    input_dim: int, hidden: int, num_masks: int, batch_size: int, log_z_samples: int = 300, device: str = "cpu"
) -> dict[str, Callable[[], None]]:
    """One training step of each objective over a fresh K-mask MADE (name -> step), and ``draw_poe_samples``:
    drawing the PoE objective's ``log_z_samples`` mixture samples alone."""
    x = torch.rand(batch_size, input_dim, generator=torch.Generator().manual_seed(0)).round().to(device)
    steps = {}
    for name, schedule in schedules(log_z_samples).items():
        model = timed_made(input_dim, [hidden], device, num_masks)
        weights, estimator = schedule.mixture_weights(model), schedule.log_z_estimator(model)
        extras = [module.to(device) for module in (weights, estimator) if module is not None]
        parameters = [p for module in (model, *extras) for p in module.parameters() if p.requires_grad]
        steps[name] = _step(model, schedule, weights, estimator, torch.optim.Adam(parameters), x)
    sampled = timed_made(input_dim, [hidden], device, num_masks)
    bank = [sampled.mask(k) for k in range(num_masks)]
    steps["draw_poe_samples"] = lambda: sample_mixture(sampled, bank, log_z_samples, sampled.generator)
    return steps


def _step(
    model: MADE,
    schedule: MaskSchedule,
    weights: MixtureWeights | None,
    estimator: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
) -> Callable[[], None]:
    """A training step as MADEModule takes it: the step's masks, the objective's loss, backward, Adam."""
    step_count = itertools.count()

    def step() -> None:
        masks = schedule.training_masks(model, next(step_count))
        loss, _ = schedule.loss(model, x, masks, weights, model.generator, estimator=estimator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run_objective_benchmarks(
    num_masks: Sequence[int] = (4, 16),
    input_dim: int = 784,
    hidden: int = 500,
    batch_size: int = 100,
    steps: int = 3,
    repeats: int = 3,
    device: str = "cpu",
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, float]:
    """Milliseconds per step of each objective, and its ratio to the Jensen step, at each K."""
    results: dict[str, float] = {}
    for k in num_masks:
        log(f"training objectives, {input_dim}-{hidden}-{input_dim}, K = {k}")
        calls = objective_steps(input_dim, hidden, k, batch_size, device=device)
        seconds = best_seconds_interleaved(calls, steps, repeats, 1, device)
        for name, value in seconds.items():
            results[f"k{k}_{name}_ms_per_step"] = 1e3 * value
            results[f"k{k}_{name}_vs_jensen"] = value / seconds["jensen"]
    return results
