"""Fit and test one configuration with Lightning: what made-train runs for each job.

``train(cfg)`` builds the data, the module, the loggers and callbacks from a composed config, fits, tests the
best checkpoint with the configured ensemble, draws samples and writes ``results.json``; it returns the results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.loggers import MLFlowLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from made_exp.core.sampling import sample_mixture
from made_exp.errors import STOPPED_BY_SIGINT, STOPPED_BY_SIGTERM
from made_exp.lightning.checkpoint_io import AtomicCheckpointIO
from made_exp.lightning.loading import best_checkpoint, build_datamodule, build_module, warm_start
from made_exp.lightning.logs import EpochLog, on_a_terminal, quiet_lightning
from made_exp.lightning.module import MADEModule
from made_exp.lightning.pruning import TrialPruning, check_single_process, trial_pruning
from made_exp.runs.atomic import remove_stray_temporary_files, write_json_atomic
from made_exp.runs.config import absolute_data_paths, check_mask_bank_memory, validate_config
from made_exp.runs.images import save_sample_grid
from made_exp.runs.provenance import git_commit
from made_exp.runs.ranks import process_rank
from made_exp.runs.results import run_metadata
from made_exp.runs.rundir import RunDir
from made_exp.runs.sweep import PRUNED
from made_exp.runs.threads import set_job_threads

__all__ = ["train", "build_loggers", "build_callbacks", "write_results", "record_best_validation", "stopped_message"]

log = logging.getLogger("made_exp")


def build_loggers(cfg: DictConfig, output_dir: Path) -> list:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        wandb = node._target_.endswith("WandbLogger")
        mlflow = node._target_.endswith("MLFlowLogger")
        logger = instantiate(node, **(_wandb_run(output_dir) if wandb else _mlflow_run(output_dir) if mlflow else {}))
        if wandb:
            # Lightning passes anonymous=None to wandb.init, which then warns in every run that the setting has
            # no effect; leaving the key out is the same run without the warning
            logger._wandb_init.pop("anonymous", None)
        if mlflow and rank_zero_only.rank == 0 and not RunDir(output_dir).mlflow_id.is_file():
            # logger.run_id creates the MLflow run; its store is kept as an absolute URI beside it
            run = {"run_id": logger.run_id, "tracking_uri": _absolute_store(node.tracking_uri)}
            write_json_atomic(RunDir(output_dir).mlflow_id, run)
        loggers.append(logger)
    return loggers


def _mlflow_run(output_dir: Path) -> dict:
    """The MLflow run (id and store) this run dir logged to before, so a resumed run continues it wherever it
    is resumed from."""
    id_file = RunDir(output_dir).mlflow_id
    return json.loads(id_file.read_text()) if id_file.is_file() else {}


def _absolute_store(uri: str) -> str:
    """A ``sqlite:///relative/path`` tracking URI made absolute (``sqlite:////abs/path``); others unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def _wandb_run(output_dir: Path) -> dict:
    """One W&B run per job: its id is kept in the run dir so a resumed run continues it; a sweep is a group."""
    id_file = RunDir(output_dir).wandb_id
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        import wandb

        run_id = wandb.sdk.lib.runid.generate_id()
        if rank_zero_only.rank == 0:
            id_file.write_text(run_id + "\n")
    run = {"id": run_id, "resume": "allow"}
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        run.update(group=Path(HydraConfig.get().sweep.dir).name, name=output_dir.name)
    return run


def build_callbacks(cfg: DictConfig) -> list:
    """The config's callbacks, without the progress bar where no terminal shows it, the epoch log, and the
    pruning of a search's trial (``hydra.sweeper.pruner``)."""
    nodes = (cfg.get("callbacks") or {}).values()
    shown = [node for node in nodes if on_a_terminal() or not node._target_.endswith("ProgressBar")]
    pruning = trial_pruning()
    return [*(instantiate(node) for node in shown), EpochLog(), *([pruning] if pruning is not None else [])]


def train(cfg: DictConfig, resume_from: Path | None = None) -> dict:
    """Fit and test one configuration, continuing from the checkpoint ``resume_from`` if given;
    returns (and writes) the results dict."""
    validate_config(cfg)
    set_job_threads()  # the job's CPU share (SLURM_CPUS_PER_TASK, ...), not every core of the node
    started, commit = time.perf_counter(), git_commit()
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    output_dir = Path(cfg.paths.output_dir)
    absolute_data_paths(cfg, RunDir(output_dir).config)
    pl.seed_everything(cfg.seeds.init, workers=True, verbose=False)

    datamodule = build_datamodule(cfg.data)
    check_mask_bank_memory(cfg, datamodule.input_dim)
    datamodule.setup("fit")  # read and validate the data before anything is written
    module = build_module(cfg, datamodule.input_dim)
    if cfg.init_from is not None and resume_from is None:  # a resumed run has its own weights
        log.info(f"weights from {warm_start(module, cfg.init_from)}")
    if resume_from is not None:
        RunDir(output_dir).reopen()
    if process_rank() == 0:
        _remove_stray_temporary_files(output_dir)
    quiet_lightning()
    log.info(f"run dir: {output_dir}")
    with _ddp_ranks_join(output_dir):
        continued_mlflow = RunDir(output_dir).mlflow_id.is_file()  # the run as it was first configured stays logged
        loggers = build_loggers(cfg, output_dir)
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            logger=loggers or False,
            callbacks=build_callbacks(cfg),
            plugins=[AtomicCheckpointIO()],  # checkpoints written beside themselves, whatever $TMPDIR is
            **({} if on_a_terminal() else {"enable_progress_bar": False}),
        )
        check_single_process(trainer)  # before fit starts any DDP rank
        for logger in loggers:
            if not (continued_mlflow and isinstance(logger, MLFlowLogger)):  # MLflow refuses a param's new value
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

        try:
            with _stopped_by_signals(output_dir):
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
                stopped_by = _stopped_by(trainer)  # before test() reloads the callbacks' state from best.ckpt
                checkpoint = best_checkpoint(trainer)
                best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
                trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            results = {
                "metrics": {**_best_validation(checkpoint), **module.test_results},
                "per_mask_nll": module.per_mask_nll,
                "epochs": trainer.current_epoch,
                "stopped_by": stopped_by,
                **_estimator_record(module),
                "best_checkpoint": best,
                **run_metadata(cfg, wall_time_s=time.perf_counter() - started, commit=commit),
            }
            if trainer.is_global_zero:
                write_results(results, module, loggers, output_dir)
            return results
        finally:
            _finish_wandb()


def _estimator_record(module: MADEModule) -> dict:
    """``log_z_estimator`` for the poe objective: the method and the epochs where it degraded, with why."""
    if module.masks.objective != "poe":
        return {}
    degraded = [{"epoch": epoch, "why": why} for epoch, why in module.degraded_epochs]
    return {"log_z_estimator": {"method": module.masks.log_z, "degraded_epochs": degraded}}


def _remove_stray_temporary_files(output_dir: Path) -> None:
    """A run (re)starting in ``output_dir`` first removes the temporary files of a write that a kill cut short."""
    for path in remove_stray_temporary_files(output_dir):
        log.info(f"removed {path}, left by a write that did not finish")


def write_results(results: dict, module: MADEModule, loggers: list, output_dir: Path) -> None:
    """A finished run's outputs: the sample grid (also to the loggers that take images), ``results.json``, the
    best validation NLL in W&B's summary, and the test results in the log."""
    samples = _sample_grid(module, RunDir(output_dir).samples)
    if samples is not None:
        for logger in loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(samples)])
    write_json_atomic(RunDir(output_dir).results, results)
    record_best_validation(loggers, results["metrics"])
    _log_summary(results, output_dir)


@contextlib.contextmanager
def _stopped_by_signals(output_dir: Path) -> Iterator[None]:
    """A SIGTERM (a scheduler's warning before it kills) or Ctrl-C, which Lightning turns into SystemExit, ends
    the process with status 143 or 130 (never 0: a scheduler must not read it as success), saying how to resume.

    ``checkpoints/last.ckpt`` holds the end of the last complete epoch (written every epoch); resuming from there
    gives the same result as a run never stopped.
    """
    try:
        yield
    except SystemExit as stop:
        sigterm = isinstance(stop, SIGTERMException)
        if rank_zero_only.rank == 0:
            print(stopped_message(output_dir, sigterm), file=sys.stderr)
        raise SystemExit(STOPPED_BY_SIGTERM if sigterm else STOPPED_BY_SIGINT) from None


def stopped_message(output_dir: Path, sigterm: bool) -> str:
    """made-train's line when a SIGTERM or Ctrl-C stopped the run in ``output_dir``: how to continue it."""
    last = RunDir(output_dir).last_checkpoint
    resume = shlex.quote(f"resume={output_dir}")
    state = (
        f"{last} holds the last complete epoch; continue with: made-train {resume}"
        if last.is_file()
        else "no epoch finished, so there is nothing to resume"
    )
    return f"made-train: stopped by {'SIGTERM' if sigterm else 'an interrupt'}; {state}"


@contextlib.contextmanager
def _ddp_ranks_join(output_dir: Path) -> Iterator[None]:
    """Let the DDP ranks that Lightning relaunches (``made-train <argv>``) join this job, then clean up.

    Ranks > 0 rerun the command line with ``hydra.run.dir`` set to ours (``MADE_RUN_DIR``, read by
    ``conf/train.yaml``). In a multirun that command line is this job's overrides, not the sweep's.
    Afterwards the process group and Lightning's rank variables go, so the next job of a multirun
    run in this process starts its own ranks instead of joining ranks that have exited.
    """
    saved_environ, saved_argv = dict(os.environ), list(sys.argv)
    os.environ["MADE_RUN_DIR"] = str(output_dir)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        job = HydraConfig.get().job
        sys.argv = [sys.argv[0], f"--config-name={job.config_name}", *HydraConfig.get().overrides.task]
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv = saved_argv


def _sample_grid(module: MADEModule, path: Path) -> Path | None:
    """Draw ``module.num_samples`` from the mixture of the test masks and save them as a PNG grid."""
    if module.num_samples == 0:
        return None
    masks = getattr(module.ensemble, "masks", None) or [module.model.mask(0)]
    samples = sample_mixture(module.model, masks, module.num_samples, torch.Generator().manual_seed(0))
    return save_sample_grid(samples, path)


def _stopped_by(trainer: pl.Trainer) -> str:
    """What ended training: pruned (a search's pruner), early_stopping (the paper's protocol), max_time, max_epochs
    or other (e.g. a step cap); signals end the process instead (``_stopped_by_signals``)."""
    if any(isinstance(callback, TrialPruning) and callback.pruned for callback in trainer.callbacks):
        return PRUNED
    early_stopping = trainer.early_stopping_callback
    if early_stopping is not None and early_stopping.stopped_epoch > 0:
        return "early_stopping"
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    if timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0:
        return "max_time"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "other"


def _best_validation(checkpoint: ModelCheckpoint | None) -> dict[str, float]:
    if checkpoint is None or checkpoint.best_model_score is None:
        return {}
    return {"val/best_nll": float(checkpoint.best_model_score)}


def _log_summary(results: dict, output_dir: Path) -> None:
    metrics = results["metrics"]
    shown = {key: value for key, value in metrics.items() if key.startswith("test/") and "ensemble" not in key}
    lines = [f"  {key:<32} {value:.4f}" for key, value in sorted(shown.items())]
    log.info("test results (nats per example; bpd = bits per dimension):\n" + "\n".join(lines))
    log.info(f"results: {RunDir(output_dir).results}")


def record_best_validation(loggers: list, metrics: dict) -> None:
    """Make the W&B run's summary hold the best val/nll (the run's own choice of epoch, and a search's objective
    as val/best_nll), not the last epoch's value that W&B keeps by default."""
    best = metrics.get("val/best_nll")
    for logger in loggers:
        if best is not None and isinstance(logger, WandbLogger):
            logger.experiment.summary.update({"val/nll": best, "val/best_nll": best})


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own (a run without the W&B logger
    never imports wandb, so it runs where wandb is not installed)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
