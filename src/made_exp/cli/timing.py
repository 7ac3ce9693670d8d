"""Timing for the benchmarks: best-of-blocks wall time (interleaved, for ratios on a shared machine), GEMM FLOPs
of a training step, what machine ran them, and the models they time."""

from __future__ import annotations

import datetime
import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from made_exp.core.made import MADE
from made_exp.runs.results import hardware

__all__ = [
    "synchronize",
    "best_seconds_interleaved",
    "best_seconds_per_call",
    "best_block",
    "training_gemm_flops",
    "machine_info",
    "timed_made",
]


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); nothing to wait for on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds_interleaved(
    fns: dict[str, Callable[[], object]], steps: int, repeats: int, warmup: int, device: str = "cpu"
) -> dict[str, float]:
    """Seconds per call of each function: its fastest of ``repeats`` blocks of ``steps`` calls, after ``warmup``
    calls. The functions' blocks take turns, so a machine whose speed drifts (a shared VM) biases no ratio."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def best_seconds_per_call(
    fn: Callable[[], object], steps: int, repeats: int, warmup: int, device: str = "cpu"
) -> float:
    """``best_seconds_interleaved`` of one function."""
    return best_seconds_interleaved({"fn": fn}, steps, repeats, warmup, device)["fn"]


def best_block(stamps: Sequence[float], sizes: Sequence[int], steps: int, repeats: int, warmup: int) -> float:
    """Seconds per unit of work from the start times of consecutive steps (and the end of the last) and the
    work of each step, in blocks of ``steps`` steps timed like ``best_seconds_per_call``."""
    best = math.inf
    for r in range(repeats):
        first, last = warmup + r * steps, warmup + (r + 1) * steps
        best = min(best, (stamps[last] - stamps[first]) / sum(sizes[first:last]))
    return best


def training_gemm_flops(batch_size: int, widths: Sequence[int]) -> int:
    """GEMM FLOPs of one training step of an MLP with layer widths ``[D, H_1, ..., D]``.

    Forward: one GEMM per layer; backward: the weight gradient of every layer and the input gradient of
    every layer but the first (no gradient w.r.t. the data). One hidden layer: 5 GEMMs of 2 B D H.
    """
    per_layer = [2 * batch_size * w_in * w_out for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)]
    return 2 * sum(per_layer) + sum(per_layer[1:])


def machine_info(device: str = "cpu") -> dict:
    """What results.json records as hardware, plus the device, the fp32 matmul precision and the date."""
    return {
        **hardware(),
        "device": device,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def timed_made(input_dim: int, hidden: Sequence[int], device: str = "cpu", num_masks: int = 1) -> MADE:
    """A MADE to time, on ``device``, without the warning that a narrow layer cuts an input off (irrelevant to
    speed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MADE(input_dim, list(hidden), num_masks=num_masks).to(device)
