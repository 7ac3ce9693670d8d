"""TPE on dna with and without median pruning: 40 trials of at most 300 epochs, 3 sampler seeds, timed.

Runs the searches of each sampler seed side by side, by default a pruned and an unpruned one (one thread each,
so the pair shares the machine's load), and records each search's wall and CPU seconds in
``<out>/timings.json``. ``--conditions median_patient`` adds the median pruner with 10 startup trials and 30
warm-up epochs (it never stops a trial before early stopping's patience could):

    MADE_DATA_DIR=../shared/data python experiments/search_pruning/run.py /tmp/search_pruning
    MADE_DATA_DIR=../shared/data python experiments/search_pruning/run.py /tmp/search_pruning --seeds 0 \
        --conditions median_patient    # likewise 1 and 2, at once
    python experiments/search_pruning/report.py /tmp/search_pruning experiments/search_pruning
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONDITIONS = {
    "none": ("hydra.sweeper.pruner=none",),
    "median": ("hydra.sweeper.pruner=median",),
    "median_patient": (
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruners.median.n_startup_trials=10",
        "hydra.sweeper.pruners.median.n_warmup_steps=30",
    ),
}
SEARCH = (
    "hydra/sweeper=optuna_tpe",
    "data=dna",
    "masks=cycle",
    "logger=csv",
    "hydra.sweeper.n_trials=40",
    "trainer.max_epochs=300",  # a trial's budget: early stopping (patience 30) usually ends it first
)


def search_command(out: Path, pruner: str, seed: int) -> list[str]:
    """The made-train multirun of one search: TPE over the sweeper's lr, width and K."""
    name = f"{pruner}_seed{seed}"
    return [
        "made-train",
        "-m",
        *SEARCH,
        *CONDITIONS[pruner],
        f"hydra.sweeper.seed={seed}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweep.dir={out / name}",
        f"paths.log_dir={out / 'logs'}",
    ]


def run_together(out: Path, seed: int, conditions: list[str]) -> dict[str, dict[str, float]]:
    """The searches of one sampler seed at once; each one's wall and CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    started, processes = {}, {}
    for pruner in conditions:
        log = (out / f"{pruner}_seed{seed}.log").open("w")
        started[pruner] = time.monotonic()
        command = search_command(out, pruner, seed)
        processes[pruner] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    timings, by_pid = {}, {process.pid: pruner for pruner, process in processes.items()}
    while by_pid:  # in the order they finish, so each one's wall time ends when it does
        pid, status, usage = os.wait4(-1, 0)
        pruner = by_pid.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            log = out / f"{pruner}_seed{seed}.log"
            sys.exit(f"search {pruner} seed {seed} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
        timings[f"{pruner}_seed{seed}"] = {
            "pruner": pruner,
            "seed": seed,
            "wall_s": round(time.monotonic() - started[pruner], 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        }
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the six searches and timings.json go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=["none", "median"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if all(f"{pruner}_seed{seed}" in read_timings(args.out) for pruner in args.conditions):
            continue
        record_timings(args.out, run_together(args.out, seed, args.conditions))


def read_timings(out: Path) -> dict:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_timings(out: Path, new: dict) -> None:
    """Add ``new`` to ``<out>/timings.json`` under a lock, so that drivers running at once keep each other's."""
    with open(out / "timings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings = {**read_timings(out), **new}
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(new, indent=2), flush=True)


if __name__ == "__main__":
    main()
