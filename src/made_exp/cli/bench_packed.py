"""``made-bench --packed``: a sweep of small runs, packed (``hydra/launcher=packed``) against the best way to run
it without packing, and where a packed step's time goes.

Sweep throughput is end to end, through the real CLI, as a user runs it: N dna-size runs (MADE 180-500-180, Adam,
batch 100) that differ in seed and learning rate, each trained for a fixed number of epochs (early stopping out of
reach), timed from the command's start to its exit. Examples per second are summed over the sweep
(N x epochs x 1400 / wall seconds). The baseline is the joblib launcher with one job per core and one thread per
job (``hydra/launcher=parallel``, made_exp.runs.threads); on a GPU, Hydra's basic launcher, one job at a time.

The step breakdown times, in this process, one packed optimiser step of N members against N solo steps, and splits
the packed step into its GEMMs (the same batched matmuls alone), the N optimiser steps, and the rest (element-wise
work, stacking, Python).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from made_exp.cli.timing import best_seconds_interleaved, synchronize, training_gemm_flops
from made_exp.core.made import MADE
from made_exp.core.packed import packed_log_prob

__all__ = ["sweep_seconds", "sweep_benchmark", "step_breakdown", "run_packed_benchmarks"]

DNA_TRAIN = 1400  # training examples of dna
LEARNING_RATES = (1e-3, 2e-3)


def sweep_seconds(launcher: str, num_runs: int, epochs: int, sweep_dir: Path, device: str = "cpu") -> float:
    """Wall seconds of ``made-train -m`` over ``num_runs`` dna runs (seeds x ``LEARNING_RATES``) with ``launcher``."""
    seeds = ",".join(str(seed) for seed in range(num_runs // len(LEARNING_RATES)))
    command = [
        sys.executable,
        "-m",
        "made_exp.cli.train",
        "-m",
        f"hydra/launcher={launcher}",
        "data=dna",
        "logger=csv",
        "module.num_samples=0",
        f"trainer.max_epochs={epochs}",
        f"callbacks.early_stopping.patience={epochs + 1}",
        f"seed={seeds}",
        f"optimizer.lr={','.join(map(str, LEARNING_RATES))}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    if launcher == "parallel":
        command.append(f"hydra.launcher.n_jobs={os.cpu_count()}")
    if torch.device(device).type == "cuda":
        command.append("trainer=gpu")
    environ = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MADE_NUM_THREADS")}
    start = time.perf_counter()
    done = subprocess.run(command, env={**environ, "WANDB_MODE": "offline"}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def sweep_benchmark(num_runs: int, epochs: int, baseline: str, device: str = "cpu") -> dict[str, float]:
    """Examples per second of the sweep packed and under ``baseline``, and their ratio."""
    examples = num_runs * epochs * DNA_TRAIN
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for launcher in ("packed", baseline):
            seconds = sweep_seconds(launcher, num_runs, epochs, Path(scratch) / launcher, device)
            results[f"sweep_{num_runs}_{launcher}_examples_per_s"] = examples / seconds
            results[f"sweep_{num_runs}_{launcher}_s"] = seconds
    results[f"sweep_{num_runs}_packed_vs_{baseline}"] = (
        results[f"sweep_{num_runs}_packed_examples_per_s"] / results[f"sweep_{num_runs}_{baseline}_examples_per_s"]
    )
    return results


def _members(num_members: int, input_dim: int, hidden: int, device: str) -> list[MADE]:
    return [MADE(input_dim, [hidden], seed=seed).to(device) for seed in range(num_members)]


def _step(models: list[MADE], optimizers: list[torch.optim.Optimizer], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        loss = -packed_log_prob(models, x).mean(1).sum()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    return step


def step_breakdown(
    num_members: int,
    input_dim: int = 180,
    hidden: int = 500,
    batch_size: int = 100,
    device: str = "cpu",
    steps: int = 20,
    repeats: int = 5,
    warmup: int = 5,
) -> dict[str, float]:
    """Milliseconds of one packed step of ``num_members`` and its parts, of N solo steps, and GEMM GFLOP/s."""
    adam = functools.partial(torch.optim.Adam, lr=1e-3, fused=True)
    models = _members(num_members, input_dim, hidden, device)
    optimizers = [adam(model.parameters()) for model in models]
    x = torch.randint(0, 2, (num_members, batch_size, input_dim), device=device).float()
    solo_model = _members(1, input_dim, hidden, device)
    solo = _step(solo_model, [adam(solo_model[0].parameters())], x[:1])
    packed = _step(models, optimizers, x)
    packed()  # gradients exist, for timing the optimiser steps alone

    def optimiser_steps() -> None:
        for optimizer in optimizers:
            optimizer.step()

    hidden_out = torch.randn(num_members, batch_size, hidden, device=device)
    w1, w2 = (torch.randn(num_members, a, b, device=device) for a, b in ((input_dim, hidden), (hidden, input_dim)))
    grad_out = torch.randn(num_members, batch_size, input_dim, device=device)

    def gemms() -> None:  # the step's batched matmuls: 2 forward, 2 weight gradients, 1 input gradient
        torch.bmm(x, w1), torch.bmm(hidden_out, w2)
        torch.bmm(hidden_out.transpose(1, 2), grad_out), torch.bmm(x.transpose(1, 2), hidden_out)
        torch.bmm(grad_out, w2.transpose(1, 2))

    seconds = best_seconds_interleaved(
        {"packed": packed, "solo": solo, "optimiser": optimiser_steps, "gemms": gemms}, steps, repeats, warmup, device
    )
    synchronize(device)
    flops = num_members * training_gemm_flops(batch_size, [input_dim, hidden, input_dim])
    other = seconds["packed"] - seconds["gemms"] - seconds["optimiser"]
    prefix = f"step_{num_members}"
    return {
        f"{prefix}_packed_ms": seconds["packed"] * 1e3,
        f"{prefix}_solo_ms_each": seconds["solo"] * 1e3,
        f"{prefix}_packed_vs_solo": num_members * seconds["solo"] / seconds["packed"],
        f"{prefix}_gemm_ms": seconds["gemms"] * 1e3,
        f"{prefix}_optimiser_ms": seconds["optimiser"] * 1e3,
        f"{prefix}_other_ms": other * 1e3,
        f"{prefix}_gemm_gflops_in_step": flops / seconds["packed"] / 1e9,
        f"{prefix}_gemm_gflops_alone": flops / seconds["gemms"] / 1e9,
    }


def run_packed_benchmarks(
    sizes: tuple[int, ...], epochs: int, device: str = "cpu", log: Callable[[str], None] = lambda _: None
) -> dict[str, float]:
    """The step breakdown and the sweep comparison for each sweep size in ``sizes``."""
    baseline = "basic" if torch.device(device).type == "cuda" else "parallel"
    results: dict[str, float] = {"sweep_epochs": epochs}
    for size in sizes:
        log(f"packed step of {size} dna-size members, and {size} solo steps")
        results.update(step_breakdown(size, device=device))
        log(f"a sweep of {size} dna runs x {epochs} epochs: packed, then {baseline}")
        results.update(sweep_benchmark(size, epochs, baseline, device))
    return results
