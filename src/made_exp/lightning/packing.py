"""Train a group of same-shape runs as one packed model (``hydra/launcher=packed``, ``made_exp.runs.packed_launch``).

Each member is a whole made-train run: its own config, seeds, ``MADEModule`` (MADE, mask schedule, optimiser and
learning-rate schedule, built exactly as ``train`` builds them), data order, early stopping and run dir. A training
step stacks the active members' minibatches into (N, B, D) and runs one forward and backward pass through
``core.packed``; each member's own optimiser then steps its own parameters. A member that stops early (the rules of
Lightning's ``EarlyStopping`` and ``ModelCheckpoint``, on the float32 value Lightning compares) leaves the pack and
keeps its ``best.ckpt``; the others go on. Every epoch writes each member's ``checkpoints/last.ckpt`` (its state plus
the loop's, under ``packed``), from which a rerun of the sweep continues the group.

What packs (``unpackable`` says why not): objectives ``nll`` and ``mixture`` (any schedule and S), fp32 on one
CPU or GPU (not tested on a GPU yet), no ``max_time``/``max_steps``/batch limits, no ``compile_model``, not a DDP run.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from made_exp.core.ensemble import Mixture
from made_exp.core.packed import packed_log_prob, packed_mixture_log_prob, shape_key
from made_exp.lightning.loading import build_datamodule, build_module
from made_exp.lightning.module import MADEModule, divergence
from made_exp.runs.atomic import remove_stray_temporary_files, torch_bytes, write_bytes_atomic
from made_exp.runs.config import absolute_data_paths, check_mask_bank_memory, validate_config
from made_exp.runs.rundir import RunDir

__all__ = [
    "PACKABLE_OBJECTIVES",
    "unpackable",
    "EarlyStop",
    "Member",
    "group_key",
    "fit_packed",
    "Stopped",
    "packed_checkpoint",
    "restorable",
]

log = logging.getLogger("made_exp")

PACKABLE_OBJECTIVES = ("nll", "mixture")
_UNSUPPORTED_TRAINER_KEYS = (
    "max_time",
    "max_steps",
    "limit_train_batches",
    "limit_val_batches",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "val_check_interval",
)


def unpackable(cfg: DictConfig) -> str | None:
    """Why the run ``cfg`` describes cannot be trained in a pack (it then runs alone), or None if it can."""
    trainer = cfg.trainer
    if cfg.masks.objective not in PACKABLE_OBJECTIVES:
        return f"masks.objective={cfg.masks.objective} scores every bank mask each step"
    if str(trainer.get("devices", 1)) != "1" or str(trainer.get("num_nodes", 1)) != "1":
        return "not one device (trainer.devices, trainer.num_nodes)"
    if str(trainer.get("precision", "32-true")) not in ("32", "32-true"):
        return f"trainer.precision={trainer.precision}"
    if cfg.module.get("compile_model", False):
        return "module.compile_model=true"
    if int(trainer.get("check_val_every_n_epoch", 1) or 1) != 1:
        return "validation less often than every epoch"
    for key in _UNSUPPORTED_TRAINER_KEYS:
        if trainer.get(key) is not None:
            return f"trainer.{key} is set"
    stopper = (cfg.get("callbacks") or {}).get("early_stopping")
    if stopper is not None and any(
        stopper.get(key) is not None for key in ("stopping_threshold", "divergence_threshold")
    ):
        return "early stopping with a threshold"
    return None


@dataclass
class EarlyStop:
    """One member's early stopping and best checkpoint, by the rules of Lightning's ``EarlyStopping`` (improve by
    more than ``min_delta``, stop after ``patience`` validations without, or at a non-finite value) and
    ``ModelCheckpoint`` (keep the strictly lowest), on val/nll rounded to float32 as Lightning's comparisons are."""

    patience: int | None  # None: no early stopping
    min_delta: float = 0.0
    best_score: float = math.inf  # early stopping's reference
    wait: int = 0
    best_checkpoint_score: float = math.inf
    stopped: bool = False
    stopped_epoch: int = 0  # the 0-based epoch that stopped training

    def update(self, value: float, epoch: int) -> bool:
        """Record epoch ``epoch``'s (0-based) val/nll; whether it is the best so far (save best.ckpt)."""
        value = float(torch.tensor(value, dtype=torch.float32))
        improved_checkpoint = value < self.best_checkpoint_score
        if improved_checkpoint:
            self.best_checkpoint_score = value
        if self.patience is None:
            return improved_checkpoint
        if not math.isfinite(value):
            self.stopped = True
        elif value + self.min_delta < self.best_score:
            self.best_score, self.wait = value, 0
        else:
            self.wait += 1
            self.stopped = self.wait >= self.patience
        if self.stopped:
            self.stopped_epoch = epoch
        return improved_checkpoint


class Stopped(Exception):
    """A SIGTERM or SIGINT arrived while a pack trained; every member's last.ckpt holds its last complete epoch."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class Member:
    """One run of a pack: built from its composed config exactly as ``train`` builds a run, then restored from its
    packed ``last.ckpt`` if an earlier pack left one. ``error`` holds what went wrong for this run alone."""

    def __init__(self, cfg: DictConfig, loaded: list[dict[str, Tensor]]) -> None:
        validate_config(cfg)
        self.cfg, self.output_dir = cfg, Path(cfg.paths.output_dir)
        self.run = RunDir(self.output_dir)
        absolute_data_paths(cfg, self.run.config)
        pl.seed_everything(cfg.seeds.init, workers=True, verbose=False)
        self.datamodule = build_datamodule(cfg.data)
        check_mask_bank_memory(cfg, self.datamodule.input_dim)
        self._share_data(loaded)
        self.module: MADEModule = build_module(cfg, self.datamodule.input_dim).to(_device(cfg.trainer))
        configured = self.module.configure_optimizers()
        self.optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        self.scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
        stopper = (cfg.get("callbacks") or {}).get("early_stopping")
        self.early_stop = EarlyStop(
            None if stopper is None else int(stopper.patience),
            abs(float(stopper.get("min_delta", 0.0) or 0.0)) if stopper is not None else 0.0,
        )
        self.max_epochs = int(cfg.trainer.max_epochs)
        self.epoch = self.step = 0  # epochs finished, optimiser steps taken
        self.error: Exception | None = None
        self.pack_size = 1  # runs in its pack (set by the launcher)
        self.train_nll = self.val_nll = math.nan
        remove_stray_temporary_files(self.output_dir)  # left by a killed write of an earlier pack
        self._restore()

    def _share_data(self, loaded: list[dict[str, Tensor]]) -> None:
        """Read and validate the data before anything trains, and keep one copy of equal data in a pack: members
        that differ only in the order of batches (``data.seed`` of a file) share the tensors of the first."""
        self.datamodule.setup("fit")
        splits = self.datamodule.splits
        for other in loaded:
            if other.keys() == splits.keys() and all(
                other[name].shape == splits[name].shape and torch.equal(other[name], splits[name]) for name in splits
            ):
                self.datamodule.splits = other
                return
        loaded.append(splits)

    @property
    def model(self):
        return self.module.model

    @property
    def active(self) -> bool:
        return self.error is None and not self.early_stop.stopped and self.epoch < self.max_epochs

    @property
    def stopped_by(self) -> str:
        if self.early_stop.stopped:
            return "early_stopping"
        return "max_epochs" if self.epoch >= self.max_epochs else "other"

    def minibatches(self) -> Iterator[Tensor]:
        """This epoch's (B, D) training minibatches, in the order a solo run sees them."""
        for group in self.datamodule.train_dataloader():
            yield from group

    def checkpoint(self) -> dict:
        """What ``last.ckpt`` and ``best.ckpt`` hold: the module's weights (``state_dict``, as a Lightning checkpoint,
        so made-eval and made-sample load it), the optimiser, scheduler and data order, and the loop's state."""
        return {
            "epoch": self.epoch,
            "global_step": self.step,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": self.module.state_dict(),
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [] if self.scheduler is None else [self.scheduler.state_dict()],
            type(self.datamodule).__qualname__: self.datamodule.state_dict(),
            "packed": {"epoch": self.epoch, "step": self.step, "early_stop": asdict(self.early_stop)},
        }

    def _restore(self) -> None:
        """Continue from ``last.ckpt`` when an earlier pack wrote one (a solo run's is not ``packed``: see
        ``restorable``)."""
        if not self.run.last_checkpoint.is_file():
            return
        state = torch.load(self.run.last_checkpoint, map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer_states"][0])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["lr_schedulers"][0])
        self.datamodule.load_state_dict(state[type(self.datamodule).__qualname__])
        self.epoch, self.step = state["packed"]["epoch"], state["packed"]["step"]
        self.early_stop = EarlyStop(**state["packed"]["early_stop"])
        self.run.reopen()

    def save(self, improved: bool) -> None:
        """Write ``best.ckpt`` when this epoch is the best, then ``last.ckpt``, each atomically
        (``made_exp.runs.atomic``), from one serialisation of the checkpoint."""
        checkpoint = torch_bytes(self.checkpoint())
        if improved:
            write_bytes_atomic(self.run.best_checkpoint, checkpoint)
        write_bytes_atomic(self.run.last_checkpoint, checkpoint)


def _device(trainer: DictConfig) -> torch.device:
    """The device the run's trainer config asks for: a GPU for ``gpu``/``cuda``, or ``auto`` where one is present."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def packed_checkpoint(checkpoint: Path) -> bool:
    """Whether a pack wrote ``checkpoint`` (its loop state is under ``packed``, which Lightning's loop cannot read)."""
    return "packed" in torch.load(checkpoint, map_location="cpu", weights_only=False)


def restorable(run_dir: Path) -> bool:
    """Whether ``run_dir`` can join a pack: no ``last.ckpt`` yet, or one a pack wrote."""
    last = RunDir(run_dir).last_checkpoint
    return not last.is_file() or packed_checkpoint(last)


def group_key(member: Member) -> tuple:
    """Members with the same key train in one pack: same tensor shapes, minibatch size, training-set size and number
    of training masks a step (``masks.samples_per_step``: a packed step runs the members' s-th masks together)."""
    data = member.datamodule
    return (
        shape_key(member.model),
        data.batch_size,
        len(data.split("train")),
        str(member.model.output.weight.device),
        member.module.masks.samples_per_step,
    )


def fit_packed(
    members: list[Member],
    loggers: dict[Path, list],
    epoch_logs: dict[Path, logging.Logger],
    received: list[int],
    summary: bool = True,
) -> None:
    """Train ``members`` (one pack) until each stops; ``loggers`` and ``epoch_logs`` by run dir take each member's
    per-epoch metrics and log line, and made_exp's log one line per pack epoch if ``summary``. Raises ``Stopped``
    once ``received`` holds a signal number (the caller's signal handler appends it), after the last complete
    epoch's files."""
    try:
        for member in members:
            member.module._num_train = len(member.datamodule.split("train"))
            if member.module.masks.uses_one_mask(member.model):
                member.model.bake_mask()
        while any(member.active for member in members):
            _train_epoch(members, loggers, epoch_logs, received, summary)
    finally:
        for member in members:
            member.model.unbake_mask()


def _train_epoch(
    members: list[Member],
    loggers: dict[Path, list],
    epoch_logs: dict[Path, logging.Logger],
    received: list[int],
    summary: bool,
) -> None:
    started = time.perf_counter()
    active = [member for member in members if member.active]
    batches = [member.minibatches() for member in active]
    total, count = 0.0, 0  # (N,) sum of the minibatches' losses x sizes (on the device: no sync per step)
    for minibatches in zip(*batches, strict=True):
        total = total + _packed_step(active, minibatches).double() * len(minibatches[0])
        count += len(minibatches[0])
        if received:
            raise Stopped(received[0])
    for member, loss in zip(active, (total / count).tolist(), strict=True):
        member.train_nll = loss
        _stop_if_diverged(member, loss)
    _validate([member for member in active if member.error is None])
    for member in active:
        _end_epoch(member, loggers[member.output_dir], epoch_logs[member.output_dir], time.perf_counter() - started)
    if received:
        raise Stopped(received[0])
    if not summary:
        return
    stopped = sum(not member.active for member in members)
    log.info(
        f"packed epoch {max(member.epoch for member in active)}: {len(active)} of {len(members)} runs trained, "
        f"{stopped} finished  {time.perf_counter() - started:.1f} s"
    )


def _packed_step(active: list[Member], minibatches: tuple[Tensor, ...]) -> Tensor:
    """One optimiser step of every active member on its own (B, D) minibatch; returns the (N,) losses.

    Member n's loss is what ``MaskSchedule.loss`` computes for it alone: its S training masks for this step, then
    ``E_s[-log p_s(x)]`` (``nll``) or ``-log (1/S) sum_s p_s(x)`` (``mixture``), mean over the minibatch."""
    models = [member.model for member in active]
    x = torch.stack(minibatches).to(models[0].output.weight.device)
    step_masks = [member.module.masks.training_masks(member.model, member.step) for member in active]
    per_mask = []
    for masks in zip(*step_masks, strict=True):
        for model, mask in zip(models, masks, strict=True):
            model.set_mask(mask)
        per_mask.append(packed_log_prob(models, x))
    log_probs = torch.stack(per_mask)  # (S, N, B)
    mixture = [member.module.masks.objective == "mixture" for member in active]
    jensen = -log_probs.mean(dim=(0, 2))
    tighter = -(torch.logsumexp(log_probs, 0) - math.log(log_probs.shape[0])).mean(1)
    losses = torch.where(torch.tensor(mixture, device=x.device), tighter, jensen)
    for member in active:
        member.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    for member in active:
        member.optimizer.step()
        member.step += 1
        if member.model.mask_baked:
            member.model.zero_masked_weights()
    return losses.detach()


def _stop_if_diverged(member: Member, loss: float) -> None:
    """The member fails (``DivergenceError``, as a solo run) when its epoch's mean loss diverged; others train on."""
    if member.error is None:
        member.error = divergence(loss, member.model.input_dim, member.epoch, member.step)


def _validate(active: list[Member]) -> None:
    """Each member's val/nll on its validation ensemble (``MADEModule``'s): all members at once when every one
    validates on a uniform mixture of the same number of masks, else one after the other."""
    ensembles = [member.module.validation_ensemble for member in active]
    for member, ensemble in zip(active, ensembles, strict=True):
        ensemble.prepare(member.model)
        member.module._use_learned_weights(ensemble)
    packable = all(type(e) is Mixture and e.log_weights is None for e in ensembles)
    if packable and len({len(e.masks) for e in ensembles}) == 1 and active:
        valid = [member.datamodule.split("valid") for member in active]
        batch = active[0].datamodule.eval_batch_size
        device = active[0].model.output.weight.device
        totals = torch.zeros(len(active), dtype=torch.float64, device=device)
        for start in range(0, len(valid[0]), batch):
            x = torch.stack([split[start : start + batch] for split in valid]).to(device)
            log_probs = packed_mixture_log_prob([m.model for m in active], [e.masks for e in ensembles], x)
            totals -= log_probs.double().sum(1)
        for member, total, split in zip(active, totals.tolist(), valid, strict=True):
            member.val_nll = total / len(split)
        return
    for member, ensemble in zip(active, ensembles, strict=True):
        valid = member.datamodule.split("valid")
        batch = member.datamodule.eval_batch_size
        device = member.model.output.weight.device
        total = sum(
            float(-ensemble.log_prob(member.model, valid[start : start + batch].to(device))["log_prob"].double().sum())
            for start in range(0, len(valid), batch)
        )
        member.val_nll = total / len(valid)


def _end_epoch(member: Member, loggers: list, epoch_log: logging.Logger, seconds: float) -> None:
    """Early stopping, checkpoints, the learning-rate schedule, metrics and the epoch's log line of one member."""
    if member.error is not None:
        return
    epoch = member.epoch
    member.epoch += 1
    improved = member.early_stop.update(member.val_nll, epoch)
    if member.scheduler is not None:
        member.scheduler.step()
    bpd = 1.0 / (member.model.input_dim * math.log(2))
    metrics = {
        "train/nll": member.train_nll,
        "val/nll": member.val_nll,
        "val/bpd": member.val_nll * bpd,
        "epoch": epoch,
    }
    for logger in loggers:
        logger.log_metrics(metrics, step=member.step - 1)
        logger.save()
    member.save(improved)
    epoch_log.info(
        f"epoch {member.epoch}/{member.max_epochs}  train {member.train_nll:.4f}  val {member.val_nll:.4f}"
        f"  (best val {member.early_stop.best_checkpoint_score:.4f})  {seconds:.1f} s"
    )
    if member.early_stop.stopped:
        stopper = member.early_stop
        epoch_log.info(
            f"early stopping after epoch {stopper.stopped_epoch + 1}: val/nll did not improve for "
            f"{stopper.patience} validations (best {stopper.best_score:.4f})"
        )


def test_trainer(cfg: DictConfig, loggers: list) -> pl.Trainer:
    """A Trainer that only tests, configured as the run's own (device, precision), logging to its loggers."""
    return instantiate(
        cfg.trainer, logger=loggers or False, callbacks=[], enable_progress_bar=False, enable_checkpointing=False
    )
