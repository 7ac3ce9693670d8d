"""``made-eval``: score a trained run under any ensemble strategy.

Usage:
    made-eval logs/train/runs/<run> --ensemble poe
    made-eval logs/train/runs/<run> --ensemble mixture --set num_masks=1000 mask_source=fresh
Prints the metrics and writes ``eval_<ensemble>.json`` in the run dir (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf

from made_exp.config import ConfigError
from made_exp.errors import exit_on_user_error
from made_exp.loading import load_run
from made_exp.results import git_commit, run_metadata, write_json_atomic
from made_exp.train import CONFIG_DIR

__all__ = ["evaluate", "main"]


def ensemble_config(name: str, overrides: list[str]):
    path = Path(CONFIG_DIR) / "ensemble" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"--ensemble {name!r} is not allowed; choose one of: {', '.join(choices)}")
    return OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides))


def evaluate(run_dir: str | Path, ensemble: str = "mixture", overrides: list[str] | None = None) -> dict:
    """Test metrics of the run's best checkpoint under ``ensemble`` (a conf/ensemble/ name)."""
    started, commit = time.perf_counter(), git_commit()
    cfg, datamodule, module = load_run(run_dir, ensemble_config(ensemble, overrides or []))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {"metrics": module.test_results, "per_mask_nll": module.per_mask_nll, "ensemble": ensemble,
            **run_metadata(cfg, wall_time_s=time.perf_counter() - started, commit=commit)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-eval", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a made-train run directory")
    parser.add_argument("--ensemble", default="mixture", help="a conf/ensemble/ name")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ensemble config overrides")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: RUN_DIR/eval_<ensemble>.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    with exit_on_user_error("made-eval"):
        results = evaluate(args.run_dir, args.ensemble, args.set)
    for key, value in sorted(results["metrics"].items()):
        print(f"{key:<40} {value:.4f}")
    write_json_atomic(args.out or args.run_dir / f"eval_{args.ensemble}.json", results)


if __name__ == "__main__":
    main()
