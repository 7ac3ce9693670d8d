"""``made-train``: compose the config, fit, test with the ensemble, write ``results.json``.

Usage:
    made-train data=dna masks=fresh optimizer=adagrad
    made-train resume=logs/train/runs/<run>          # continue from <run>/checkpoints/last.ckpt
    made-train resume=<run> trainer.max_epochs=3000 overwrite=true   # a finished run capped at fewer: train on
    made-train -m model.num_masks=1,2,4,8 seed=0,1,2  # a sweep (see made_exp.runs.sweep)
    made-train trainer=ddp trainer.devices=2          # DDP: ranks > 0 are relaunched into this run dir

Only Hydra and the config schema are imported before the config is composed, so a bad override answers
without loading torch or Lightning, and ``made-train --help`` reads the conf/ folders alone (``made-bench``
times both --help).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from made_exp.errors import UserError, UserErrorInJob
from made_exp.runs.config import CONFIG_DIR, exit_on_config_error, register_configs, validate_config
from made_exp.runs.jobdir import job_dir_name
from made_exp.runs.provenance import git_commit
from made_exp.runs.ranks import process_rank
from made_exp.runs.resume import last_checkpoint, lock_run, record_kept_if_refused, resume_arguments, resumed_run
from made_exp.runs.submission import sbatch_refusals_as_user_errors
from made_exp.runs.sweep import run_job

__all__ = ["main"]

# hydra.run.dir (conf/train.yaml) is the first of these that is set: MADE_RUN_DIR, resume, a new dir.
OmegaConf.register_new_resolver(
    "made.first_set", lambda *values: next(v for v in values if v is not None), replace=True
)
# hydra.sweep.subdir: a job's dir is one path component, whatever its override values hold.
OmegaConf.register_new_resolver("made.job_dir", job_dir_name, replace=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from made_exp.lightning.packed_launch import train_run  # torch and Lightning: only once there is a run

        return run_job(train_run, cfg)  # a failed job (a bad value too) is recorded and the sweep goes on
    try:
        validate_config(cfg)  # before torch and Lightning load: a bad value is refused at once
        from made_exp.lightning.packed_launch import train_run

        resume_from = last_checkpoint(Path(cfg.resume), cfg.overwrite) if cfg.resume else None
        metrics = train_run(cfg, resume_from=resume_from)["metrics"]
    except UserError as error:
        _remove_if_unused(Path(cfg.paths.output_dir))
        raise UserErrorInJob(error) from None  # past Hydra's own "Error executing job" line: ours is the one
    return metrics.get("val/best_nll")  # what a sweeper (e.g. Optuna) minimises


def _remove_if_unused(run_dir: Path) -> None:
    """Delete a run dir that holds only what Hydra wrote before the run failed on bad input."""
    hydra_only = {".hydra", "train.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        shutil.rmtree(run_dir)


def usage() -> str:
    """``made-train --help``: how to call it and every config group's options, read from the conf/ folders.

    Hydra's own help also prints the composed config, and spends a second listing the groups from its config
    store; ``made-train --cfg job`` prints the config, ``made-train --hydra-help`` Hydra's options.
    """
    conf = Path(CONFIG_DIR)
    groups = sorted(path for path in conf.iterdir() if path.is_dir() and path.name != "hydra")
    lines = [(__doc__ or "").strip(), "", "Config groups (group=option; any key can be overridden: model.num_masks=8):"]
    for group in groups:
        lines.append(f"  {group.name}: {', '.join(sorted(option.stem for option in group.glob('*.yaml')))}")
    lines += [
        "",
        "made-train --cfg job [overrides]   the composed config",
        "made-train --hydra-help           "
        "Hydra's options (launchers: hydra/launcher=..., sweepers: hydra/sweeper=...)",
    ]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] in (["--help"], ["-h"]):
        print(usage())
        return
    register_configs()
    os.environ.setdefault("WANDB_MODE", "offline")
    git_commit()  # the code this process loads now is what every job of it runs
    with exit_on_config_error("made-train"), sbatch_refusals_as_user_errors():
        sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:])]
        run_dir = resumed_run(sys.argv[1:])
        if run_dir is not None and process_rank() == 0:
            lock_run(run_dir)
        with record_kept_if_refused(run_dir):
            _hydra_main()


if __name__ == "__main__":
    main()
