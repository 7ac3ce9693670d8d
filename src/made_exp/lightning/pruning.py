"""Pruning a search's trial while it trains (``hydra.sweeper.pruner``, ``made_exp.runs.pruning``).

``trial_pruning()`` gives the callback for a job of an Optuna search with a pruner (None otherwise): after each
validation epoch it reports ``val/nll`` to the job's trial (job number = trial number) and, if the pruner says so,
stops training at the end of that epoch. The run then tests its best checkpoint and writes ``results.json`` with
``stopped_by: pruned``, as any run; its checkpoints stay. A trial of several processes (DDP) is refused before it
starts (``check_single_process``): its ranks would have to stop together.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate

from made_exp.runs.config import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialPruning", "trial_pruning", "check_single_process"]

log = logging.getLogger("made_exp")


class TrialPruning(pl.Callback):
    """Report ``monitor`` to ``trial`` after each validation epoch (step = epoch) and stop when it is pruned."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str = "val/nll") -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned = False
        self.reporting = True  # False once the study holds the trial as finished (a rerun of a told trial)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or not self.reporting or value is None:
            return
        import optuna  # loaded already: the trial is Optuna's

        epoch = trainer.current_epoch
        try:
            self.trial.report(float(value), epoch)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning(f"trial {self.trial.number} is finished in its study already; training on without reporting")
            self.reporting = False
            return
        if self.trial.should_prune():
            log.info(f"trial {self.trial.number} pruned after epoch {epoch} ({self.monitor} {float(value):.4f})")
            self.pruned = True
            trainer.should_stop = True


def trial_pruning() -> TrialPruning | None:
    """The pruning callback of this job's trial, when the job is a trial of a search with a pruner (Optuna is
    imported only then)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweeper = HydraConfig.get().sweeper
    name = sweeper.get("pruner")
    if name in (None, "none"):  # a grid sweep's sweeper has no pruner
        return None
    from made_exp.runs.pruning import open_trial

    pruner = instantiate(sweeper.pruners[name])
    return TrialPruning(open_trial(sweeper.study_name, sweeper.storage, pruner, HydraConfig.get().job.num))


def check_single_process(trainer: pl.Trainer) -> None:
    """Refuse a pruned trial of several processes (DDP), before fit starts them: only this one reports."""
    if trainer.world_size > 1 and any(isinstance(callback, TrialPruning) for callback in trainer.callbacks):
        raise ConfigError(
            f"hydra.sweeper.pruner prunes trials of one process, not this one of {trainer.world_size} (DDP); "
            "set trainer.devices=1 and trainer.num_nodes=1, or hydra.sweeper.pruner=none"
        )
