"""``hydra/launcher=packed``: the jobs of a sweep that share tensor shapes train together, in this process.

Three passes over the jobs, each job going through Hydra's own ``run_job`` so that its dir gets what a solo job's
gets (``.hydra/``, ``train.log``, the job's Hydra config):

1. set up: each job's run is built (``packing.Member``). A job that cannot pack (``packing.unpackable``), has
   finished (unless ``overwrite=true``), has a solo run's ``last.ckpt``, or fails to build is left to pass 3.
2. train: members are grouped by ``packing.group_key`` and each group trains as packs (``packing.fit_packed``):
   on a GPU one pack (at most ``max_pack`` runs), on a CPU one pack per core, trained at once in threads with one
   torch thread each (measured: two packs of 4 dna runs in two threads step 8 runs in 8.1 ms, one pack of 8 on
   two torch threads in 10.3 ms). A member's epoch lines go to its own ``train.log``, one line per pack epoch
   to the console.
3. finish: every job runs through the sweep's ``run_job`` (``made_exp.runs.sweep``): a member is tested on its
   ``best.ckpt`` and writes ``results.json`` as a solo run does (failures become its ``error.json``); any other
   job runs made-train's own task, as Hydra's basic launcher would run it.

A SIGTERM or Ctrl-C while a pack trains ends the process (143 or 130) with every member's ``last.ckpt`` at its
last complete epoch; rerunning the sweep with the same ``hydra.sweep.dir`` continues the pack.

``train_run`` is made-train's task for every job and solo run: a run whose ``last.ckpt`` a pack wrote goes on as a
pack of one (``made-train resume=<job dir>``, or a rerun of its sweep with another launcher), since Lightning's loop
would restart that checkpoint at epoch 0 with its early stopping forgotten; any other run trains with
``training.train``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from made_exp.errors import STOPPED_BY_SIGINT, STOPPED_BY_SIGTERM
from made_exp.lightning.logs import quiet_lightning
from made_exp.lightning.packing import (
    Member,
    Stopped,
    fit_packed,
    group_key,
    packed_checkpoint,
    restorable,
    test_trainer,
    unpackable,
)
from made_exp.lightning.training import build_loggers, stopped_message, train, write_results
from made_exp.runs import sweep
from made_exp.runs.config import ConfigError
from made_exp.runs.provenance import git_commit
from made_exp.runs.results import run_metadata
from made_exp.runs.rundir import RunDir
from made_exp.runs.threads import set_job_threads

__all__ = ["launch", "train_run"]

log = logging.getLogger("made_exp")

_LOG_FORMAT = "[%(asctime)s][made_exp][%(levelname)s] - %(message)s"  # as made_exp lines in Hydra's job log


class _Pack:
    """The members of one launch, by job number, and their loggers and epoch logs by run dir."""

    def __init__(self, max_pack: int, workers: int, summary: bool = True) -> None:
        self.max_pack, self.workers, self.summary = max_pack, workers, summary  # summary: a console line a pack epoch
        self.members: dict[int, Member] = {}
        self.loggers: dict[Path, list] = {}
        self.epoch_logs: dict[Path, logging.Logger] = {}
        self.loaded_data: list = []  # each distinct dataset once (packing.Member)
        self.started = time.perf_counter()

    def set_up(self, cfg: DictConfig) -> None:
        """Hydra task of pass 1: build ``cfg``'s run as a member if it can pack."""
        OmegaConf.resolve(cfg)  # its output dir, while Hydra's config is this job's
        output_dir = Path(cfg.paths.output_dir)
        reason = unpackable(cfg)
        finished = RunDir(output_dir).is_finished() and not cfg.overwrite  # overwrite=true: it trains on
        if reason is not None or finished or not restorable(output_dir):
            if reason is not None:
                log.info(f"{output_dir.name}: runs alone ({reason})")
            return
        try:
            member = Member(cfg, self.loaded_data)
        except Exception as error:  # pass 3 runs the job alone, which records the error as any sweep job's
            log.info(f"{output_dir.name}: runs alone ({type(error).__name__}: {error})")
            return
        self.add(HydraConfig.get().job.num, member, _epoch_log(output_dir))

    def add(self, number: int, member: Member, epoch_log: logging.Logger) -> None:
        """Take ``member`` as job ``number``, with its loggers and ``epoch_log`` for its epoch lines."""
        self.members[number] = member
        self.loggers[member.output_dir] = _own_wandb_runs(build_loggers(member.cfg, member.output_dir))
        for logger in self.loggers[member.output_dir]:
            logger.log_hyperparams(OmegaConf.to_container(member.cfg, resolve=True))
        self.epoch_logs[member.output_dir] = epoch_log

    def train(self) -> None:
        """Pass 2: the members of each group in packs, ``workers`` packs training at once (threads: the packed
        step runs in torch kernels, which release the GIL), each with one torch thread when there are several."""
        packs = [pack for members in self._groups() for pack in self._split(members)]
        received: list[int] = []
        previous = {
            number: signal.signal(number, lambda number, frame: received.append(number))
            for number in (signal.SIGTERM, signal.SIGINT)
        }
        threads = torch.get_num_threads()
        if self.workers > 1:
            torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.workers) as pool:
                running = [pool.submit(self._fit, pack, received) for pack in packs]
                while not all(future.done() for future in running):
                    wait(running, timeout=0.2)  # the main thread wakes to run the signal handler
                for future in running:
                    future.result()  # Stopped
        finally:
            torch.set_num_threads(threads)
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _groups(self) -> list[list[Member]]:
        groups: dict[tuple, list[Member]] = {}
        for member in self.members.values():
            groups.setdefault(group_key(member), []).append(member)
        return list(groups.values())

    def _split(self, members: list[Member]) -> list[list[Member]]:
        """A group as equal packs: one per worker on a CPU (at most ``max_pack`` each), else as few as fit."""
        on_cpu = members[0].model.output.weight.device.type == "cpu"
        count = max(self.workers if on_cpu else 1, -(-len(members) // self.max_pack))
        packs = [members[index::count] for index in range(min(count, len(members)))]
        for pack in packs:
            for member in pack:
                member.pack_size = len(pack)
        return packs

    def _fit(self, pack: list[Member], received: list[int]) -> None:
        log.info(f"packing {len(pack)} runs: {', '.join(m.output_dir.name for m in pack)}")
        try:
            fit_packed(pack, self.loggers, self.epoch_logs, received, self.summary)
        except Stopped:
            raise
        except Exception as error:  # e.g. out of memory: the pack's runs fail, other packs go on
            log.error(f"a pack of {len(pack)} runs failed: {type(error).__name__}: {error}")
            for member in pack:
                member.error = error

    def finish(self, member: Member) -> TaskFunction:
        """Hydra task of pass 3 for ``member``: test its best checkpoint and write its results."""
        return lambda cfg: sweep.run_job(lambda cfg, resume_from=None: self.test(member), cfg)

    def test(self, member: Member) -> dict:
        """Test ``member`` on its best checkpoint; returns (and writes) its results dict."""
        loggers = self.loggers[member.output_dir]
        try:
            if member.error is not None:
                raise member.error
            quiet_lightning()
            best = member.run.best_checkpoint
            member.module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
            test_trainer(member.cfg, loggers).test(member.module, datamodule=member.datamodule, verbose=False)
            results = {
                "metrics": {"val/best_nll": member.early_stop.best_checkpoint_score, **member.module.test_results},
                "per_mask_nll": member.module.per_mask_nll,
                "epochs": member.epoch,
                "stopped_by": member.stopped_by,
                "best_checkpoint": str(best),
                "packed_with": member.pack_size,
                **run_metadata(member.cfg, wall_time_s=time.perf_counter() - self.started, commit=git_commit()),
            }
            write_results(results, member.module, loggers, member.output_dir)
            return results
        finally:
            _close(loggers, self.epoch_logs[member.output_dir])


def train_run(cfg: DictConfig, resume_from: Path | None = None) -> dict:
    """Train (or continue from ``resume_from``) and test the run ``cfg``; returns (and writes) its results dict."""
    if resume_from is not None and packed_checkpoint(resume_from):
        return _continue_alone(cfg)
    return train(cfg, resume_from=resume_from)


def _continue_alone(cfg: DictConfig) -> dict:
    """Continue a run whose ``last.ckpt`` a pack wrote as a pack of one, its epoch lines in made-train's log."""
    output_dir = Path(cfg.paths.output_dir)
    reason = unpackable(cfg)
    if reason is not None:
        raise ConfigError(
            f"{output_dir}: a pack trained this run, so only a pack continues it, and a pack cannot "
            f"train it now ({reason})"
        )
    set_job_threads()
    pack = _Pack(max_pack=1, workers=1, summary=False)
    member = Member(cfg, pack.loaded_data)
    pack.add(0, member, log)  # its epoch lines to the console and train.log, as a solo run's
    log.info(f"run dir: {output_dir} (a pack's run, continued as a pack of one from epoch {member.epoch})")
    try:
        pack.train()
    except Stopped as stop:
        sigterm = stop.signal_number == signal.SIGTERM
        print(stopped_message(output_dir, sigterm), file=sys.stderr)
        raise SystemExit(STOPPED_BY_SIGTERM if sigterm else STOPPED_BY_SIGINT) from None
    return pack.test(member)


def _own_wandb_runs(loggers: list) -> list:
    """Start each W&B logger's run now, as a run of its own (a solo run's logger would join whatever run is open)."""
    for logger in loggers:
        if hasattr(logger, "_wandb_init"):
            import wandb

            offline = {"mode": "offline"} if logger._offline else {}
            logger._experiment = wandb.init(**{**logger._wandb_init, **offline, "reinit": "create_new"})
    return loggers


def _epoch_log(output_dir: Path) -> logging.Logger:
    """A logger writing to the member's own ``train.log`` (Hydra's job log), not to the console."""
    logger = logging.getLogger(f"made_exp.packed.{output_dir}")
    logger.propagate, logger.level = False, logging.INFO
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logger.handlers = [handler]
    return logger


def _close(loggers: list, epoch_log: logging.Logger) -> None:
    for logger in loggers:
        if getattr(logger, "_experiment", None) is not None and hasattr(logger, "_wandb_init"):
            logger.experiment.finish()
        logger.finalize("success")
    for handler in epoch_log.handlers:
        handler.close()
    epoch_log.handlers = []


def _run_each(
    hydra_context: HydraContext,
    config: DictConfig,
    configs: Sequence[DictConfig],
    task: Callable[[DictConfig], TaskFunction],
) -> list[JobReturn]:
    """Each job through Hydra's ``run_job`` with the task ``task(job config)``, console logging restored after."""
    returns = []
    for cfg in configs:
        returns.append(
            run_job(
                hydra_context=hydra_context,
                task_function=task(cfg),
                config=cfg,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    max_pack: int,
    workers: int | None,
) -> list[JobReturn]:
    """Run the jobs ``job_overrides`` (numbered from ``initial_job_idx``), packing those that can pack, at most
    ``max_pack`` runs to a pack and ``workers`` packs at once (None: this job's CPU share, ``set_job_threads``)."""
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    cores = set_job_threads()  # the whole process trains: all of its CPU share
    configs = []
    for index, overrides in enumerate(job_overrides):
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = initial_job_idx + index
        configs.append(cfg)
    pack = _Pack(max_pack, workers or cores)
    log.info(
        f"launching {len(configs)} jobs, packing those that share shapes (at most {max_pack} to a pack, "
        f"up to {pack.workers} packs at once)"
    )
    _run_each(hydra_context, config, configs, lambda cfg: pack.set_up)
    try:
        pack.train()
    except Stopped as stop:
        sigterm = stop.signal_number == signal.SIGTERM
        print(
            f"made-train: stopped by {'SIGTERM' if sigterm else 'an interrupt'}; each packed run's "
            f"checkpoints/last.ckpt holds its last complete epoch; rerun the sweep with "
            f"hydra.sweep.dir={config.hydra.sweep.dir} to continue",
            file=sys.stderr,
        )
        raise SystemExit(STOPPED_BY_SIGTERM if sigterm else STOPPED_BY_SIGINT) from None

    def task(cfg: DictConfig) -> TaskFunction:
        member = pack.members.get(cfg.hydra.job.num)
        return task_function if member is None else pack.finish(member)

    return _run_each(hydra_context, config, configs, task)
