"""What a person reads while made-train runs: one line per epoch, early stopping announced, and Lightning's
messages in the run's log (``train.log``) without its tips and possible-user warnings.

On a terminal the rich progress bar also runs; elsewhere (a SLURM ``.out`` file, ``| tee``) the epoch lines
are the progress, since a progress bar only writes carriage returns there.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

import pytorch_lightning as pl
from lightning_fabric.utilities.warnings import disable_possible_user_warnings

from made_exp.core.objectives import estimator_degraded
from made_exp.lightning.loading import best_checkpoint

__all__ = ["EpochLog", "quiet_lightning", "on_a_terminal"]

log = logging.getLogger("made_exp")


def on_a_terminal() -> bool:
    return sys.stdout.isatty()


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Route Lightning's INFO messages through the root logger (Hydra's console and ``train.log`` handlers) and
    drop its advertising tips and the warnings it files under 'possible user warnings' or that torch raises
    inside it for its own deprecated calls."""
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        if logging.getLogger().hasHandlers():
            logger.handlers.clear()
            logger.propagate = True
        messages = logging.getLogger(f"{name}.utilities.rank_zero")  # a filter sees only its own logger's records
        if not any(isinstance(f, _DropTips) for f in messages.filters):
            messages.addFilter(_DropTips())
    disable_possible_user_warnings()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class EpochLog(pl.Callback):
    """Logs ``epoch E/N  train T  val V (best B)  S s`` for each finished epoch, and why training stopped.

    The poe objective's log Z estimator adds ``log Z L ± E`` and its health: ``ESS F%`` (importance sampling and
    smc), ``distinct F%`` (smc, after its moves), ``NCE acc A%`` (nce). An epoch where the estimator
    degraded (``objectives.estimator_degraded``) says ``DEGRADED: why``, and the first one is also a warning.
    An epoch is logged when the next one starts or training ends: only then has Lightning run every hook that
    logs its metrics (validation runs before the epoch's own end hooks).
    """

    def __init__(self) -> None:
        self._started: float | None = None
        self._warned_degraded = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is not None:
            self._log_epoch(trainer, trainer.current_epoch)
        self._started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is not None:
            self._log_epoch(trainer, trainer.current_epoch)
        stopper = trainer.early_stopping_callback
        if trainer.is_global_zero and stopper is not None and stopper.stopped_epoch > 0:
            log.info(
                f"early stopping after epoch {stopper.stopped_epoch + 1}: {stopper.monitor} did not improve "
                f"for {stopper.patience} validations (best {float(stopper.best_score):.4f})"
            )

    def _log_epoch(self, trainer: pl.Trainer, epoch: int) -> None:
        """``epoch``: how many epochs have finished."""
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {epoch}/{trainer.max_epochs}"]
        for name in ("train", "val"):
            if f"{name}/nll" in metrics:
                parts.append(f"{name} {float(metrics[f'{name}/nll']):.4f}")
        checkpoint = best_checkpoint(trainer)
        if checkpoint is not None and checkpoint.best_model_score is not None:
            parts.append(f"(best val {float(checkpoint.best_model_score):.4f})")
        if "train/log_z" in metrics:
            parts.append(self._log_z_part(metrics, epoch))
        parts.append(f"{time.perf_counter() - self._started:.1f} s")
        log.info("  ".join(parts))

    def _log_z_part(self, metrics: dict, epoch: int) -> str:
        """The epoch's training log Z and its estimator's health; a warning the first time it degrades."""
        train = {name[len("train/") :]: float(value) for name, value in metrics.items() if name.startswith("train/")}
        part = f"log Z {train['log_z']:.2f}"
        if "log_z_stderr" in train:
            part += f" ± {train['log_z_stderr']:.2f}"
        for key, label in HEALTH.items():
            if key in train:
                part += f"  {label} {train[key]:.1%}"
        why = estimator_degraded(train)
        if why is not None:
            part += f"  DEGRADED: {why}"
            if not self._warned_degraded:
                self._warned_degraded = True
                log.warning(
                    f"epoch {epoch}: the training log Z estimator degraded ({why}): log Z, its gradient and "
                    "val/nll may be biased; score the product with poe.log_z_method=ais before trusting it"
                )
        return part


HEALTH = {"effective_sample_fraction": "ESS", "distinct_fraction": "distinct", "classifier_accuracy": "NCE acc"}
