"""``made-eval``: score a trained run under any ensemble strategy.

Usage:
    made-eval logs/train/runs/<run> --ensemble poe
    made-eval logs/train/runs/<run> --ensemble mixture --set num_masks=1000 mask_source=fresh
    made-eval logs/train/runs/<run> --ensemble poe --accelerator cpu   # default auto: a GPU where there is one
Prints the metrics and writes ``eval_<ensemble>.json`` in the run dir (``eval_<ensemble>.<hash of the --set
settings>.json`` with ``--set``; or ``--out``), with ``run_status``: ``finished``, or ``unfinished`` (a run still
training, or stopped: a warning says its checkpoint is the best so far) or ``failed``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from made_exp.runs.atomic import write_json_atomic
from made_exp.runs.config import exit_on_config_error
from made_exp.runs.run_status import warn_if_unfinished
from made_exp.runs.rundir import RunDir

__all__ = ["ACCELERATORS", "main"]

ACCELERATORS = ("auto", "cpu", "gpu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-eval", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run directory")
    parser.add_argument("--ensemble", default="mixture", help="a conf/ensemble/ name")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ensemble config overrides")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="where to score: auto (a GPU where there is one, default), cpu or gpu",
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the JSON (default: RUN_DIR/eval_<ensemble>[.<hash of --set>].json)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    from made_exp.lightning.evaluation import evaluate  # torch and Lightning: after --help and argument errors

    with exit_on_config_error("made-eval"):
        warn_if_unfinished("made-eval", args.run_dir, args.checkpoint)
        results = evaluate(args.run_dir, args.ensemble, args.set, args.checkpoint, args.accelerator)
    print(f"checkpoint: {results['checkpoint']}")
    for key, value in sorted(results["metrics"].items()):
        print(f"{key:<40} {value:.4f}")
    write_json_atomic(args.out or RunDir(args.run_dir).evaluation(args.ensemble, args.set), results)


if __name__ == "__main__":
    main()
