"""Trial: would skipping the blocks that MADE's masks zero speed up a 784-500-784 training step here?

With hidden units sorted by degree and inputs in ordering order, every masked weight matrix is a
staircase: row r uses columns [0, prefix[r]). Cut into row blocks, each block is a GEMM on a column
prefix (and the input gradient, cut into column blocks, a GEMM on a row suffix), about 62% of the
dense FLOPs with 4 x 4 blocks. This times the step's five GEMMs (forward of both layers, both weight
gradients, the hidden-unit gradient) dense and blocked: on all threads, on one thread, and with the
blocks split between two Python threads that run one-threaded GEMMs side by side. Prints ms per step.

    python experiments/bench/block_skipping.py          # about a minute on 2 cores
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from made_exp.core.made import sample_hidden_degrees

D, H, B, BLOCKS = 784, 500, 100, 4


def staircase(prefix: torch.Tensor, width: int) -> tuple[list, list]:
    """(rows, cols): (r0, r1, columns used) per row block and (c0, c1, first row using them) per column block."""
    out = len(prefix)
    rows = [(i * out // BLOCKS, (i + 1) * out // BLOCKS) for i in range(BLOCKS)]
    cols = [(i * width // BLOCKS, (i + 1) * width // BLOCKS) for i in range(BLOCKS)]
    return (
        [(r0, r1, int(prefix[r1 - 1])) for r0, r1 in rows],
        [(c0, c1, int(torch.searchsorted(prefix, c0, right=True))) for c0, c1 in cols],
    )


def gemm_tasks() -> tuple[Callable[[], object], list[list[Callable[[], object]]]]:
    """The dense step's GEMMs as one call, and the blocked step's as five phases of independent block GEMMs
    (feature-major activations, so every block writes a contiguous slice or a BLAS-strided view)."""
    degrees = sample_hidden_degrees([H], D, torch.Generator().manual_seed(0))[0].sort().values
    positions = torch.arange(1, D + 1)
    w1 = torch.randn(H, D) * (degrees[:, None] >= positions[None, :])
    w2 = torch.randn(D, H) * (positions[:, None] > degrees[None, :])
    x_t, grad_logits_t = torch.bernoulli(torch.full((D, B), 0.3)), torch.randn(D, B)
    h_t, logits_t, grad_h_t = torch.empty(H, B), torch.empty(D, B), torch.empty(H, B)
    grad_w1, grad_w2 = torch.zeros(H, D), torch.zeros(D, H)
    rows1, _ = staircase(degrees, D)
    rows2, cols2 = staircase(torch.searchsorted(degrees, positions), H)
    x, grad_logits = x_t.T.contiguous(), grad_logits_t.T.contiguous()

    def dense() -> None:
        h = x @ w1.T
        h @ w2.T, grad_logits.T @ h
        (grad_logits @ w2).T @ x

    mm = torch.mm
    phases = [
        [lambda a=a, b=b, p=p: mm(w1[a:b, :p], x_t[:p], out=h_t[a:b]) for a, b, p in rows1],
        [lambda a=a, b=b, p=p: mm(w2[a:b, :p], h_t[:p], out=logits_t[a:b]) for a, b, p in rows2],
        [lambda a=a, b=b, p=p: grad_w2[a:b, :p].addmm_(grad_logits_t[a:b], h_t[:p].T, beta=0) for a, b, p in rows2],
        [lambda a=a, b=b, s=s: mm(w2[s:, a:b].T, grad_logits_t[s:], out=grad_h_t[a:b]) for a, b, s in cols2],
        [lambda a=a, b=b, p=p: grad_w1[a:b, :p].addmm_(grad_h_t[a:b], x_t[:p].T, beta=0) for a, b, p in rows1],
    ]
    return dense, phases


def ms_per_call(fn: Callable[[], object], calls: int = 50, repeats: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return 1e3 * best


def main() -> None:
    dense, phases = gemm_tasks()
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(1)

    def blocked() -> None:
        for phase in phases:
            for task in phase:
                task()

    def two_python_threads() -> None:  # blocks alternate between this thread and the pool's
        for phase in phases:
            future = pool.submit(torch.no_grad()(lambda tasks=phase[1::2]: [task() for task in tasks]))
            for task in phase[::2]:
                task()
            future.result()

    print(f"{'':<40}{'dense':>8}{'blocked':>9}")
    print(f"{f'{threads} threads':<40}{ms_per_call(dense):>8.2f}{ms_per_call(blocked):>9.2f}")
    torch.set_num_threads(1)
    print(f"{'1 thread':<40}{ms_per_call(dense):>8.2f}{ms_per_call(blocked):>9.2f}")
    print(f"{'blocks on 2 Python threads, 1 each':<40}{'':>8}{ms_per_call(two_python_threads):>9.2f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
