"""made-bench: how fast MADE trains, evaluates mask ensembles and samples, against this machine's GEMM peak.

Every throughput is the best of ``repeats`` timed blocks of ``steps`` calls after a warm-up (the
least-disturbed block on a shared machine), and GEMM-bound work is reported as a fraction of the
fp32 GEMM peak measured in the same run. Prints a table and one JSON object (``--json PATH`` writes it).

    made-bench                  # a few minutes on 2 cores
    made-bench --quick          # under a minute: fewer steps, smaller slices, naive big-model sampling extrapolated
    made-bench --device cuda    # on a GPU (the default where one is present), plus paper-size MNIST training
    made-bench --packed         # sweeps of 8 and 32 dna runs packed against joblib (made_exp.cli.bench_packed)
    made-bench --objectives     # a training step of each masks= objective against the Jensen step (bench_objectives)

On a GPU every timed block ends with a synchronisation, the GEMM peak is taken at 8192^3 as well, and
``torch.backends`` precision is the fp32 default ("highest": no TF32) unless ``--matmul-precision`` says otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from made_exp.cli.timing import (
    best_block,
    best_seconds_interleaved,
    best_seconds_per_call,
    machine_info,
    synchronize,
    timed_made,
    training_gemm_flops,
)
from made_exp.core.ensemble import Mixture
from made_exp.core.made import MADE
from made_exp.core.masks import MaskSchedule
from made_exp.core.sampling import sample_incremental, sample_naive
from made_exp.data.batches import TensorBatches
from made_exp.data.datamodules import BinarizedDataModule
from made_exp.data.files import DataError, dataset_info, load_npz_splits, resolve_dataset
from made_exp.lightning.module import MADEModule
from made_exp.runs.config import MATMUL_PRECISIONS

__all__ = ["BenchConfig", "QUICK", "FULL", "run_benchmarks", "BaselineMADE", "main"]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and iteration counts of one benchmark run (``QUICK`` and ``FULL`` below; tests shrink them)."""

    dataset: str = "binarized_mnist"
    hidden: int = 500
    small_dataset: str = "dna"
    small_hidden: int = 500
    batch_size: int = 100
    steps: int = 20  # timed calls per block
    repeats: int = 5  # timed blocks; the fastest counts
    warmup: int = 5
    minibatches_per_step: int = 8  # the grouped Lightning run: made-train's default data.minibatches_per_step
    gemm_square: int = 1024
    ensemble_masks: tuple[int, ...] = (32, 1000)
    ensemble_examples: tuple[int, ...] = (10000, 1000)  # test examples scored by each ensemble
    eval_batch_size: int = 2000
    sampler_batch: int = 100
    big_hidden: tuple[int, ...] = (8000, 8000)
    naive_positions: int | None = None  # time only this many naive passes and extrapolate to D (None: all D)
    big_naive_positions: int = 16
    device: str = "cpu"
    paper_training: bool = False  # also time 784-8000-8000-784 training steps (Adagrad; GPU-sized)


FULL = BenchConfig()
QUICK = replace(FULL, steps=10, repeats=3, warmup=3, ensemble_examples=(1000, 100), big_naive_positions=4)


def gemm_calls(config: BenchConfig, input_dim: int) -> dict[str, tuple[Callable[[], Tensor], int]]:
    """(call, FLOPs) of the training step's GEMMs (in their real transposes) and a square one."""
    b, d, h, n = config.batch_size, input_dim, config.hidden, config.gemm_square
    randn = functools.partial(torch.randn, device=config.device)
    shapes = [  # (left, right) operands as the step multiplies them
        (randn(b, d), randn(h, d).T),  # forward, hidden layer
        (randn(b, h), randn(d, h).T),  # forward, output layer
        (randn(b, d), randn(d, h)),  # backward, gradient w.r.t. the hidden units
        (randn(b, d).T, randn(b, h)),  # backward, weight gradients
        (randn(n, n), randn(n, n)),
    ]
    return {
        f"gemm_{index}": (functools.partial(torch.mm, left, right), 2 * left.shape[0] * left.shape[1] * right.shape[1])
        for index, (left, right) in enumerate(shapes)
    }


class MaskedLinearBaseline(nn.Linear):
    """A masked layer as public MADE implementations write it: a mask buffer applied on every forward."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.mask * self.weight, self.bias)


class BaselineMADE(nn.Sequential):
    """The reference plain-PyTorch MADE (one hidden layer, ReLU), with ``model``'s current masks and weights."""

    def __init__(self, model: MADE):
        hidden, output = model.hidden[0], model.output
        super().__init__(
            MaskedLinearBaseline(hidden.in_features, hidden.out_features, hidden.mask),
            nn.ReLU(),
            MaskedLinearBaseline(output.in_features, output.out_features, output.mask),
        )
        with torch.no_grad():
            for mine, theirs in ((self[0], hidden), (self[2], output)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)


def load_splits(name: str, num_examples: int | None = None) -> tuple[dict[str, Tensor], str]:
    """The dataset's splits from ``$MADE_DATA_DIR`` or the cache; random bits of the right shape if absent."""
    info = dataset_info(name)
    try:
        return load_npz_splits(resolve_dataset(name, download=False), info), name
    except DataError:
        generator = torch.Generator().manual_seed(0)
        splits = {
            split: torch.bernoulli(torch.full((info.num_rows(split), info.input_dim), 0.3), generator=generator)
            for split in ("train", "valid", "test")
        }
        return splits, f"{name} (absent: random bits)"


class ResidentDataModule(BinarizedDataModule):
    """Splits already in memory, served like the project's DataModules."""

    def __init__(self, splits: dict[str, Tensor], batch_size: int, minibatches_per_step: int):
        super().__init__(splits["train"].shape[1], batch_size, 2000, 0, minibatches_per_step)
        self._splits = splits

    def _load(self) -> dict[str, Tensor]:
        return self._splits


class StepTimer(pl.Callback):
    """Start time and number of minibatches of every training batch, and the end of the last; on a GPU,
    each stamp follows a synchronisation."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.stamps: list[float] = []
        self.minibatches: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        self.minibatches.append(len(batch))

    def on_train_end(self, trainer, pl_module) -> None:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())


def _adam(parameters, fused: bool = True) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-3, fused=fused)


def bare_step(
    train: Tensor,
    config: BenchConfig,
    optimizer: torch.optim.Optimizer,
    loss: Callable[[Tensor], Tensor],
    after_step: Callable[[], None] = lambda: None,
) -> Callable[[], None]:
    """A hand-written training step: next minibatch, forward, backward, optimiser step (then ``after_step``)."""
    generator = torch.Generator().manual_seed(0)
    batches = iter(())

    def step() -> None:
        nonlocal batches
        x = next(batches, None)
        if x is None:
            batches = iter(TensorBatches(train, config.batch_size, shuffle=True, generator=generator))
            x = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss(x).backward()
        optimizer.step()
        after_step()

    return step


def lightning_seconds_per_step(
    splits: dict[str, Tensor], hidden: int, config: BenchConfig, minibatches_per_step: int
) -> float:
    """Seconds per minibatch through ``Trainer.fit`` with MADEModule, startup excluded; the batches come
    from host memory, as in made-train. Blocks hold about ``config.steps`` minibatches however they are
    grouped, as long as the bare steps' blocks: on a noisy machine the fastest of longer blocks is slower."""
    model = timed_made(splits["train"].shape[1], [hidden])
    module = MADEModule(model, functools.partial(_adam), MaskSchedule(), Mixture(num_masks=1), num_samples=0)
    data = ResidentDataModule(splits, config.batch_size, minibatches_per_step)
    steps = -(-config.steps // minibatches_per_step)  # Lightning steps per block
    lightning_steps = config.warmup + steps * config.repeats
    timer = StepTimer(config.device)
    trainer = pl.Trainer(
        accelerator="gpu" if torch.device(config.device).type == "cuda" else "cpu",
        devices=1,
        max_epochs=-1,
        max_steps=lightning_steps * minibatches_per_step,  # optimiser steps (manual optimisation)
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
    return best_block(timer.stamps, timer.minibatches, steps, config.repeats, config.warmup)


def bce(model: nn.Module, x: Tensor) -> Tensor:
    """Mean NLL of the (B, D) minibatch ``x`` through torch's ``binary_cross_entropy_with_logits``, as public
    MADE implementations compute it."""
    return F.binary_cross_entropy_with_logits(model(x), x, reduction="none").sum(1).mean()


def bare_steps(train: Tensor, hidden: int, config: BenchConfig, baseline: bool) -> dict[str, Callable[[], None]]:
    """Hand-written steps of: the one-mask step as MADEModule takes it (mask baked in, fused Adam), the same
    with torch's ``binary_cross_entropy_with_logits`` as the loss, the bare step multiplying W * M in every
    forward and backward, that with unfused Adam, and the plain baseline."""
    input_dim, steps = train.shape[1], {}
    torch.manual_seed(0)
    baked, baked_bce, unbaked, unfused = (timed_made(input_dim, [hidden], config.device) for _ in range(4))
    for model in (baked, baked_bce):
        model.bake_mask()
    steps["bare"] = bare_step(
        train, config, _adam(baked.parameters()), lambda x: -baked.log_prob(x).mean(), baked.zero_masked_weights
    )
    steps["bare_torch_bce"] = bare_step(
        train, config, _adam(baked_bce.parameters()), functools.partial(bce, baked_bce), baked_bce.zero_masked_weights
    )
    steps["bare_unbaked"] = bare_step(train, config, _adam(unbaked.parameters()), lambda x: -unbaked.log_prob(x).mean())
    steps["bare_unfused_adam"] = bare_step(
        train, config, _adam(unfused.parameters(), fused=False), lambda x: -unfused.log_prob(x).mean()
    )
    if baseline:
        net = BaselineMADE(timed_made(input_dim, [hidden], config.device)).to(config.device)
        steps["baseline"] = bare_step(train, config, torch.optim.Adam(net.parameters()), functools.partial(bce, net))
    return steps


def training_benchmarks(
    splits: dict[str, Tensor],
    hidden: int,
    config: BenchConfig,
    baseline: bool,
    gemms: dict[str, tuple[Callable[[], Tensor], int]] | None = None,
) -> dict:
    """Examples/s of bare and Lightning training (one mask, Adam, fp32), and of the plain baseline; with
    ``gemms``, the GEMM peak (``gemm_gflops``) timed in turns with the bare steps."""
    train, input_dim = splits["train"].to(config.device), splits["train"].shape[1]
    gemms = gemms or {}
    calls = {**bare_steps(train, hidden, config, baseline), **{name: call for name, (call, _) in gemms.items()}}
    throughput = best_seconds_interleaved(calls, config.steps, config.repeats, config.warmup, config.device)
    bare = throughput["bare"]
    peak = max((flops / throughput.pop(name) / 1e9 for name, (_, flops) in gemms.items()), default=None)
    throughput.update(lightning_benchmarks(splits, hidden, config, calls["bare"]))
    results = {f"{name}_examples_per_s": config.batch_size / seconds for name, seconds in throughput.items()}
    for name in ("lightning", "lightning_grouped"):
        results[f"{name}_overhead_ms_per_step"] = 1e3 * (throughput[name] - throughput["bare_during_lightning"])
        results[f"{name}_vs_bare"] = throughput["bare_during_lightning"] / throughput[name]
    results["bare_gemm_gflop_per_step"] = training_gemm_flops(config.batch_size, [input_dim, hidden, input_dim]) / 1e9
    results["bare_ms_per_step"] = 1e3 * bare
    if peak is not None:
        results["gemm_gflops"] = peak
    return results


def lightning_benchmarks(
    splits: dict[str, Tensor], hidden: int, config: BenchConfig, bare: Callable[[], None]
) -> dict[str, float]:
    """Seconds per minibatch through ``Trainer.fit``, one and ``minibatches_per_step`` minibatches per
    Lightning step, each the best of ``repeats`` short fits; before each pair of fits, a block of ``bare``
    steps (``bare_during_lightning``), so that the Lightning/bare ratios compare the same stretch of time."""
    once = replace(config, repeats=1)
    groups = {"lightning": 1, "lightning_grouped": config.minibatches_per_step}
    best = dict.fromkeys(["bare_during_lightning", *groups], math.inf)
    for _ in range(config.repeats):
        seconds = best_seconds_per_call(bare, config.steps, 1, 0, config.device)
        best["bare_during_lightning"] = min(best["bare_during_lightning"], seconds)
        for name, group in groups.items():
            best[name] = min(best[name], lightning_seconds_per_step(splits, hidden, once, group))
    return best


def ensemble_benchmark(test: Tensor, num_masks: int, num_examples: int, config: BenchConfig) -> dict:
    """Mask-examples/s of the uniform mixture over ``num_masks`` fresh masks on ``num_examples`` test rows."""
    model = timed_made(test.shape[1], [config.hidden], config.device).eval()
    ensemble = Mixture(num_masks=num_masks, mask_source="fresh", seed=0)
    ensemble.prepare(model)
    x = test[:num_examples].to(config.device)
    batches = [x[i : i + config.eval_batch_size] for i in range(0, len(x), config.eval_batch_size)]

    def score() -> None:
        with torch.no_grad():
            for batch in batches:
                ensemble.log_prob(model, batch)

    seconds = best_seconds_per_call(score, 1, max(1, config.repeats // 2), 1, config.device)
    flops = 2 * 2 * test.shape[1] * config.hidden * len(x) * num_masks  # two forward GEMMs per mask
    return {"mask_examples_per_s": len(x) * num_masks / seconds, "gflops": flops / seconds / 1e9}


def naive_seconds(model: MADE, batch: int, positions: int | None, generator: torch.Generator) -> float:
    """Seconds of ``sample_naive`` on mask 0; with ``positions``, its first passes, extrapolated to D
    (each of the D passes is the same full forward pass)."""
    device = model.output.weight.device
    positions = positions if positions is not None and positions < model.input_dim else model.input_dim
    synchronize(device)
    start = time.perf_counter()
    sample_naive(model, model.mask(0), batch, generator=generator, num_positions=positions)
    synchronize(device)
    return (time.perf_counter() - start) * model.input_dim / positions


def incremental_seconds(model: MADE, batch: int, generator: torch.Generator) -> float:
    device = model.output.weight.device
    synchronize(device)
    start = time.perf_counter()
    sample_incremental(model, model.mask(0), batch, generator=generator)
    synchronize(device)
    return time.perf_counter() - start


def sampler_benchmark(
    input_dim: int, hidden: Sequence[int], batch: int, positions: int | None, device: str = "cpu"
) -> dict:
    model = timed_made(input_dim, hidden, device)
    generator = torch.Generator().manual_seed(0)
    naive_seconds(model, batch, 2, generator)  # warm-up
    naive = naive_seconds(model, batch, positions, generator)
    incremental_seconds(model, batch, generator)  # warm-up
    incremental = incremental_seconds(model, batch, generator)
    return {"naive_sample_s": naive, "incremental_sample_s": incremental, "sampler_speedup": naive / incremental}


def paper_training_benchmark(splits: dict[str, Tensor], config: BenchConfig) -> dict:
    """Examples/s of the bare training step of the paper's MNIST model (784-8000-8000-784, direct
    connection, Adagrad lr 0.01, batch 100) at the current fp32 matmul precision."""
    train = splits["train"].to(config.device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MADE(train.shape[1], list(config.big_hidden), direct_connection="output").to(config.device)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    step = bare_step(train, config, optimizer, lambda x: -model.log_prob(x).mean())
    seconds = best_seconds_per_call(step, config.steps, config.repeats, config.warmup, config.device)
    widths = [train.shape[1], *config.big_hidden, train.shape[1]]
    flops = training_gemm_flops(config.batch_size, widths) + 2 * 2 * config.batch_size * train.shape[1] ** 2
    return {
        "examples_per_s": config.batch_size / seconds,
        "ms_per_step": 1e3 * seconds,
        "epoch_s": len(train) / (config.batch_size / seconds),
        "gemm_tflops": flops / seconds / 1e12,
    }


def startup_seconds(repeats: int) -> dict[str, float]:
    """Best wall seconds of ``made-train --help`` and ``made-eval --help`` in fresh interpreters: what a person
    waits for before any work (the entry points load torch and Lightning only once there is work)."""
    commands = {"train_help_s": "made_exp.cli.train", "eval_help_s": "made_exp.cli.evaluate"}
    seconds = {}
    for key, module in commands.items():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, check=True, timeout=300)
            runs.append(time.perf_counter() - start)
        seconds[f"startup_{key}"] = min(runs)
    return seconds


def run_benchmarks(config: BenchConfig, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run every benchmark with ``config`` -> the flat dict of results (see the module docstring)."""
    splits, dataset = load_splits(config.dataset)
    small_splits, small_dataset = load_splits(config.small_dataset)
    input_dim, small_dim = splits["train"].shape[1], small_splits["train"].shape[1]
    results: dict = {
        "config": asdict(config),
        "dataset": dataset,
        "small_dataset": small_dataset,
        **machine_info(config.device),
    }

    log(f"GEMM peak and training {input_dim}-{config.hidden}-{input_dim}, in turns")
    train = training_benchmarks(splits, config.hidden, config, baseline=True, gemms=gemm_calls(config, input_dim))
    results.update(train)
    peak = train["gemm_gflops"]
    results["speedup_vs_baseline"] = train["bare_examples_per_s"] / train["baseline_examples_per_s"]
    results["bare_gemm_fraction"] = train["bare_gemm_gflop_per_step"] / (train["bare_ms_per_step"] / 1e3) / peak

    log(f"training {small_dim}-{config.small_hidden}-{small_dim}")
    small = training_benchmarks(small_splits, config.small_hidden, config, baseline=False)
    results.update({f"small_{key}": value for key, value in small.items()})
    results["small_bare_gemm_fraction"] = small["bare_gemm_gflop_per_step"] / (small["bare_ms_per_step"] / 1e3) / peak

    for num_masks, num_examples in zip(config.ensemble_masks, config.ensemble_examples, strict=True):
        log(f"ensemble of {num_masks} masks on {num_examples} test examples")
        scored = ensemble_benchmark(splits["test"], num_masks, num_examples, config)
        results[f"ensemble_{num_masks}_mask_examples_per_s"] = scored["mask_examples_per_s"]
        results[f"ensemble_{num_masks}_gemm_fraction"] = scored["gflops"] / peak

    if config.paper_training:
        log(f"training {input_dim}-{'-'.join(map(str, config.big_hidden))}-{input_dim} (Adagrad)")
        paper = paper_training_benchmark(splits, config)
        results.update({f"paper_mnist_{key}": value for key, value in paper.items()})

    for name, hidden in (("", [config.hidden]), ("big_", list(config.big_hidden))):
        positions = config.naive_positions if name == "" else config.big_naive_positions
        log(f"sampling {input_dim}-{'-'.join(map(str, hidden))}-{input_dim}")
        sampled = sampler_benchmark(input_dim, hidden, config.sampler_batch, positions, config.device)
        results.update({f"{name}{key}": value for key, value in sampled.items()})
        results[f"{name}naive_extrapolated_from_passes"] = positions or input_dim

    log("start-up: made-train --help, made-eval --help")
    results.update(startup_seconds(repeats=config.repeats))

    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if torch.device(config.device).type == "cuda":
        results["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(config.device) / 2**20
    return results


TARGETS = {  # key: (threshold, what it means)
    "bare_gemm_fraction": (0.5, "bare step >= 50% of GEMM peak"),
    "speedup_vs_baseline": (2.0, ">= 2x the plain PyTorch baseline"),
    "lightning_grouped_vs_bare": (0.9, "Lightning (made-train's 8 per step) within 10%"),
    "ensemble_1000_gemm_fraction": (0.5, "1000-mask ensemble >= 50% of GEMM peak"),
    "big_sampler_speedup": (20.0, "incremental >= 20x naive, 784-8000-8000-784"),
    "sampler_speedup": (5.0, "incremental >= 5x naive, 784-500-784"),
    "sweep_8_packed_vs_parallel": (2.0, "8 dna runs packed >= 2x joblib, 1 job a core"),
    "sweep_64_packed_vs_basic": (20.0, "64 dna runs packed on a GPU >= 20x one at a time"),
}


def format_table(results: dict) -> str:
    """The numeric results, one per line, then the targets met or not."""
    lines = [f"{key:<48} {value:>14.4g}" for key, value in results.items() if isinstance(value, float | int)]
    lines += [f"{key:<48} {value}" for key, value in results.items() if isinstance(value, str)]
    lines.append("")
    for key, (threshold, meaning) in TARGETS.items():
        if key in results:
            verdict = "met" if results[key] >= threshold else "NOT met"
            lines.append(f"{meaning:<48} {results[key]:>8.3g}  {verdict}")
    return "\n".join(lines)


def for_device(config: BenchConfig, device: str) -> BenchConfig:
    """``config`` on ``device``: on a GPU a larger square GEMM for the peak, every test row in both
    ensembles, and the paper-size training step."""
    if torch.device(device).type != "cuda":
        return replace(config, device=device)
    return replace(config, device=device, gemm_square=8192, ensemble_examples=(10000, 10000), paper_training=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute on 2 cores")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda[:N] (default: cuda where present)",
    )
    parser.add_argument(
        "--matmul-precision",
        choices=MATMUL_PRECISIONS,
        default="highest",
        help="torch.set_float32_matmul_precision: high/medium allow TF32/bf16 inside fp32 GEMMs",
    )
    parser.add_argument(
        "--packed",
        action="store_true",
        help="instead: sweeps of dna-size runs packed (hydra/launcher=packed) against the joblib "
        "launcher (one job per core; on a GPU, one job at a time), and the packed step's parts",
    )
    parser.add_argument(
        "--objectives",
        action="store_true",
        help="instead: one training step of each masks= objective (Jensen bank, mixture, learned "
        "mixture, PoE with importance-sampled log Z) on MNIST-size MADE, K = 4 and 16",
    )
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision(args.matmul_precision)
    log = functools.partial(print, "...", flush=True)
    if args.objectives:
        from made_exp.cli.bench_objectives import run_objective_benchmarks

        timed = run_objective_benchmarks(repeats=2 if args.quick else 3, device=args.device, log=log)
        results = {**machine_info(args.device), **timed}
    elif args.packed:
        from made_exp.cli.bench_packed import run_packed_benchmarks

        gpu = torch.device(args.device).type == "cuda"
        sizes, epochs = ((8,), 10) if args.quick else ((64,), 100) if gpu else ((8, 32), 100)
        results = {**machine_info(args.device), **run_packed_benchmarks(sizes, epochs, args.device, log)}
    else:
        results = run_benchmarks(for_device(QUICK if args.quick else FULL, args.device), log=log)
    print(format_table(results))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
