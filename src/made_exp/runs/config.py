"""made-train's config: where the YAML lives, the typed schema of every group, and the one validation path.

Every ``conf/<group>/`` file names its schema below in its defaults list (``/schema/<name>@_here_``), so
OmegaConf rejects unknown keys, wrong types (``model.num_masks=abc``) and values outside an ``Enum``
(``model.activation=gelu``) while composing; ``validate_config`` checks the ranges (``RANGES``) that types
cannot express. ``exit_on_config_error`` turns either kind of violation into one line and exit status 2,
before any data is read or any run dir is written.
"""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from made_exp.core.choices import (
    ACTIVATIONS,
    ANNEALING_SCHEDULES,
    DIRECT_CONNECTIONS,
    INITS,
    LOG_Z_METHODS,
    OBJECTIVES,
    POE_LOG_Z_METHODS,
    RESAMPLE_MODES,
    SCHEDULES,
    WHOLE_BANK_OBJECTIVES,
)
from made_exp.errors import UserError, exit_on_user_error, show_tracebacks
from made_exp.runs.atomic import write_text_atomic

__all__ = [
    "CONFIG_DIR",
    "MATMUL_PRECISIONS",
    "RANGES",
    "ConfigError",
    "register_configs",
    "validate_config",
    "absolute_data_paths",
    "check_mask_bank_memory",
    "mask_bank_bytes",
    "available_memory",
    "compose_ensemble",
    "exit_on_config_error",
]


def _config_dir() -> str:
    """``conf/`` of the source checkout this package runs from, else the copy an installed wheel ships."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parents[1] / "conf"
    return str(checkout if (checkout / "train.yaml").is_file() else package / "conf")


CONFIG_DIR = _config_dir()
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "transformer-engine")


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message names the key and the allowed values."""


class Choice(str, Enum):
    """A str-valued Enum: OmegaConf rejects values outside it; members are their strings to the code."""

    def __str__(self) -> str:
        return self.value


def _choices(name: str, values) -> type[Choice]:
    return Choice(name, {value: value for value in values})


Activation = _choices("Activation", ACTIVATIONS)
DirectConnection = _choices("DirectConnection", DIRECT_CONNECTIONS)
Init = _choices("Init", INITS)
Resample = _choices("Resample", RESAMPLE_MODES)
Schedule = _choices("Schedule", SCHEDULES)
Objective = _choices("Objective", OBJECTIVES)
TrainingLogZ = _choices("TrainingLogZ", LOG_Z_METHODS)
MaskSource = _choices("MaskSource", ("bank", "fresh"))
LogZMethod = _choices("LogZMethod", POE_LOG_Z_METHODS)
AnnealingSchedule = _choices("AnnealingSchedule", ANNEALING_SCHEDULES)
MatmulPrecision = _choices("MatmulPrecision", MATMUL_PRECISIONS)
Precision = _choices("Precision", PRECISIONS)
Mode = _choices("Mode", ("min", "max"))


# ---- conf/model/ <-> made_exp.core.made.MADE
@dataclass
class ModelSchema:
    _target_: str = "made_exp.core.made.MADE"
    hidden_sizes: list[int] = field(default_factory=lambda: [500])
    activation: Activation = Activation.relu
    direct_connection: DirectConnection = DirectConnection.none
    init: Init = Init.default
    num_masks: int = 1
    resample: Resample = Resample.full
    natural_ordering: bool = False
    condition_on_mask: bool = False
    seed: int = 0


# ---- conf/masks/ <-> made_exp.core.masks.MaskSchedule, made_exp.core.smc.ParticleLogZ, made_exp.core.nce
@dataclass
class ParticleLogZSchema:
    resample_below: float = 0.5
    mh_steps: int = 2
    gibbs_sweeps: int = 0


@dataclass
class NoiseContrastiveSchema:
    noise_ratio: int = 4
    refresh_steps: int = 10
    log_z_scale: float = 10.0


@dataclass
class MasksSchema:
    _target_: str = "made_exp.core.masks.MaskSchedule"
    schedule: Schedule = Schedule.cycle
    objective: Objective = Objective.nll
    samples_per_step: int = 1
    val_num_masks: int = 1
    log_z: TrainingLogZ = TrainingLogZ.exact
    log_z_samples: int = 1000
    alpha: float = 1.0
    smc: ParticleLogZSchema = field(default_factory=ParticleLogZSchema)
    nce: NoiseContrastiveSchema = field(default_factory=NoiseContrastiveSchema)
    val_log_z: LogZMethod = LogZMethod.auto
    val_ais_chains: int = 200
    val_ais_temperatures: int = 50


# ---- conf/ensemble/ <-> made_exp.core.ensemble
@dataclass
class MixtureSchema:
    _target_: str = "made_exp.core.ensemble.Mixture"
    num_masks: int | None = None
    mask_source: MaskSource = MaskSource.bank
    seed: int = 1234


@dataclass
class LearnedMixtureSchema(MixtureSchema):
    _target_: str = "made_exp.core.ensemble.LearnedMixture"
    alpha: float = 1.0
    max_iters: int = 200
    tol: float = 1e-6


@dataclass
class ProductOfExpertsSchema(MixtureSchema):
    _target_: str = "made_exp.core.ensemble.ProductOfExperts"
    log_z_method: LogZMethod = LogZMethod.auto
    num_importance_samples: int = 10000
    ais_chains: int = 1000
    ais_temperatures: int = 100
    ais_schedule: AnnealingSchedule = AnnealingSchedule.linear
    exact_max_dim: int = 20
    chunk_size: int = 16384


@dataclass
class LogitAverageSchema(MixtureSchema):
    _target_: str = "made_exp.core.ensemble.LogitAverage"
    exact_max_dim: int = 20


@dataclass
class BestSingleSchema(MixtureSchema):
    _target_: str = "made_exp.core.ensemble.BestSingle"


# ---- conf/data/ <-> made_exp.data.datamodules
@dataclass
class DataSchema:
    _target_: str = "???"
    batch_size: int = 100
    eval_batch_size: int = 2000
    seed: int = 0
    # Optimiser steps per Lightning step, to amortise Lightning's ~1 ms per-step overhead; the minibatches are the
    # same. Lightning's batch counts (progress bar, loggers' step axis, trainer.limit_train_batches) count groups.
    # Set here, not in train.yaml: each data file's schema is merged after train.yaml's own keys.
    minibatches_per_step: int = 8


@dataclass
class NPZDataSchema(DataSchema):
    _target_: str = "made_exp.data.datamodules.NPZDataModule"
    name: str | None = None
    data_dir: str | None = None
    download: bool = True
    url: str | None = None
    path: str | None = None
    split: list[float] | None = None


@dataclass
class MNISTDataSchema(DataSchema):
    _target_: str = "made_exp.data.datamodules.MNISTDataModule"
    root: str | None = None
    num_valid: int = 10000
    download: bool = False


@dataclass
class SyntheticDataSchema(DataSchema):
    _target_: str = "made_exp.data.datamodules.SyntheticDataModule"
    input_dim: int = 10
    num_components: int = 5
    num_train: int = 5000
    num_valid: int = 1000
    num_test: int = 1000


# ---- conf/optimizer/ <-> torch.optim (partial: the parameters come later)
@dataclass
class OptimizerSchema:
    _target_: str = "???"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class AdamSchema(OptimizerSchema):
    _target_: str = "torch.optim.Adam"
    fused: bool | None = None


@dataclass
class SGDSchema(OptimizerSchema):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0


@dataclass
class RMSpropSchema(OptimizerSchema):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = 0.99


@dataclass
class AdadeltaSchema(OptimizerSchema):
    _target_: str = "torch.optim.Adadelta"
    rho: float = 0.9
    eps: float = 1e-6


# ---- conf/trainer/ <-> pytorch_lightning.Trainer (the keys made-train's configs set; None = Lightning's default)
@dataclass
class TrainerSchema:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    max_epochs: int = 1000
    max_time: str | None = None
    precision: Precision = Precision("32-true")
    deterministic: bool = False
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    enable_model_summary: bool = False
    enable_progress_bar: bool | None = None
    default_root_dir: str | None = None


# ---- conf/callbacks/ and conf/logger/ <-> Lightning's callbacks and loggers
@dataclass
class CheckpointSchema:
    _target_: str = "pytorch_lightning.callbacks.ModelCheckpoint"
    dirpath: str = "???"
    filename: str = "???"
    monitor: str | None = None
    mode: Mode = Mode.min
    every_n_epochs: int | None = None
    enable_version_counter: bool = True


@dataclass
class EarlyStoppingSchema:
    _target_: str = "pytorch_lightning.callbacks.EarlyStopping"
    monitor: str = "val/nll"
    mode: Mode = Mode.min
    patience: int = 30


@dataclass
class ProgressBarSchema:
    _target_: str = "pytorch_lightning.callbacks.RichProgressBar"


@dataclass
class CSVLoggerSchema:
    _target_: str = "pytorch_lightning.loggers.CSVLogger"
    save_dir: str = "???"
    name: str = "csv"


@dataclass
class WandbLoggerSchema:
    _target_: str = "pytorch_lightning.loggers.WandbLogger"
    project: str = "made_exp"
    save_dir: str = "???"
    offline: bool = True
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)


@dataclass
class TensorBoardLoggerSchema:
    _target_: str = "pytorch_lightning.loggers.TensorBoardLogger"
    save_dir: str = "???"
    name: str = "tensorboard"
    version: str = ""  # events straight in <save_dir>/tensorboard: a resumed run appends to the same run
    default_hp_metric: bool = False


@dataclass
class MLflowLoggerSchema:
    _target_: str = "pytorch_lightning.loggers.MLFlowLogger"
    experiment_name: str = "made_exp"
    tracking_uri: str = "???"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# ---- conf/train.yaml: the top level
@dataclass
class SeedsSchema:
    init: int = 0
    masks: int = 0
    data: int = 0
    evaluation: int = 0


@dataclass
class ModuleSchema:
    _target_: str = "made_exp.lightning.module.MADEModule"
    lr_decay: float = 1.0
    num_samples: int = 64
    compile_model: bool = False
    evaluation_seed: int = 4321


@dataclass
class PathsSchema:
    log_dir: str = "logs"
    output_dir: str = "???"


@dataclass
class TrainSchema:
    seed: int = 0
    seeds: SeedsSchema = field(default_factory=SeedsSchema)
    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    matmul_precision: MatmulPrecision = MatmulPrecision.highest
    resume: str | None = None
    overwrite: bool = False
    init_from: str | None = None
    module: ModuleSchema = field(default_factory=ModuleSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    data: Any = None
    model: Any = None
    masks: Any = None
    ensemble: Any = None
    optimizer: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None


SCHEMAS: dict[str, type] = {
    "train": TrainSchema,
    "model": ModelSchema,
    "masks": MasksSchema,
    "ensemble_mixture": MixtureSchema,
    "ensemble_learned_mixture": LearnedMixtureSchema,
    "ensemble_poe": ProductOfExpertsSchema,
    "ensemble_logit_average": LogitAverageSchema,
    "ensemble_best_single": BestSingleSchema,
    "data_npz": NPZDataSchema,
    "data_mnist": MNISTDataSchema,
    "data_synthetic": SyntheticDataSchema,
    "optimizer_adam": AdamSchema,
    "optimizer_sgd": SGDSchema,
    "optimizer_adagrad": OptimizerSchema,
    "optimizer_rmsprop": RMSpropSchema,
    "optimizer_adadelta": AdadeltaSchema,
    "trainer": TrainerSchema,
    "checkpoint": CheckpointSchema,
    "early_stopping": EarlyStoppingSchema,
    "progress_bar": ProgressBarSchema,
    "logger_csv": CSVLoggerSchema,
    "logger_wandb": WandbLoggerSchema,
    "logger_tensorboard": TensorBoardLoggerSchema,
    "logger_mlflow": MLflowLoggerSchema,
}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore as ``schema/<name>`` (the YAML files name them)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)


# key: (lowest allowed, whether the lowest itself is allowed). Absent optional keys are skipped.
RANGES: dict[str, tuple[float, bool]] = {
    "seed": (0, True),
    "model.num_masks": (1, True),
    "masks.samples_per_step": (1, True),
    "masks.val_num_masks": (1, True),
    "masks.log_z_samples": (1, True),
    "masks.alpha": (1, True),
    "masks.smc.resample_below": (0, False),
    "masks.smc.mh_steps": (0, True),
    "masks.smc.gibbs_sweeps": (0, True),
    "masks.nce.noise_ratio": (1, True),
    "masks.nce.refresh_steps": (1, True),
    "masks.nce.log_z_scale": (0, False),
    "masks.val_ais_chains": (1, True),
    "masks.val_ais_temperatures": (2, True),
    "ensemble.num_masks": (1, True),
    "ensemble.num_importance_samples": (1, True),
    "ensemble.ais_chains": (1, True),
    "ensemble.ais_temperatures": (2, True),  # b = 0 and b = 1
    "ensemble.max_iters": (1, True),
    "ensemble.alpha": (0, False),
    "optimizer.lr": (0, False),
    "optimizer.weight_decay": (0, True),
    "module.lr_decay": (0, False),
    "module.num_samples": (0, True),
    "data.batch_size": (1, True),
    "data.eval_batch_size": (1, True),
    "data.minibatches_per_step": (1, True),
    "trainer.max_epochs": (1, True),
    "trainer.check_val_every_n_epoch": (1, True),
    "callbacks.early_stopping.patience": (1, True),
}


def _check_range(key: str, value: float, lowest: float, inclusive: bool) -> None:
    if value < lowest or (value == lowest and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{key}={value} is not allowed; it must be {relation} {lowest}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for a value outside its range (types and choices were checked while composing)."""
    for key, (lowest, inclusive) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            _check_range(key, value, lowest, inclusive)
    objective, schedule = OmegaConf.select(cfg, "masks.objective"), OmegaConf.select(cfg, "masks.schedule")
    if objective in WHOLE_BANK_OBJECTIVES and schedule != "cycle":
        raise ConfigError(
            f"masks.objective={objective} is not allowed with masks.schedule={schedule}; it trains "
            "on the K bank masks: use masks.schedule=cycle (masks=cycle)"
        )
    hidden_sizes = OmegaConf.select(cfg, "model.hidden_sizes", default=None)
    if hidden_sizes is not None and (not hidden_sizes or min(hidden_sizes) < 1):
        raise ConfigError(
            f"model.hidden_sizes={list(hidden_sizes)} is not allowed; it must be a non-empty list of positive widths"
        )
    _validate_own_data(cfg)


def _validate_own_data(cfg: DictConfig) -> None:
    """``data.split``: three fractions in (0, 1) summing to 1, and only for one's own file (``data.path``)."""
    split = OmegaConf.select(cfg, "data.split", default=None)
    if split is None:
        return
    if OmegaConf.select(cfg, "data.path", default=None) is None:
        raise ConfigError(f"data.split={list(split)} is not allowed without data.path; it splits your own file")
    if len(split) != 3 or not all(0 < fraction < 1 for fraction in split) or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(
            f"data.split={list(split)} is not allowed; it must be three fractions "
            "(train, valid, test), each in (0, 1), summing to 1"
        )


DATA_PATH_KEYS = ("data.path", "data.data_dir")


def absolute_data_paths(cfg: DictConfig, saved_config: Path) -> None:
    """Make the relative ``DATA_PATH_KEYS`` given as values (not interpolations) absolute, against the working
    directory (made-train does not change it), in ``cfg`` and in the run's ``saved_config`` (``.hydra/config.yaml``),
    so that made-eval and made-sample find the data from any directory."""
    absolute = {}
    for key in DATA_PATH_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None)
        if not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
            continue
        value = node[leaf]
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            absolute[key] = str(Path(value).expanduser().absolute())
    if not absolute:
        return
    saved = OmegaConf.load(saved_config) if saved_config.is_file() else None
    for key, value in absolute.items():
        OmegaConf.update(cfg, key, value)
        if saved is not None:
            OmegaConf.update(saved, key, value)
    if saved is not None:
        write_text_atomic(saved_config, OmegaConf.to_yaml(saved))


# bytes a small tensor costs beyond its values (the Python object, its storage, the allocator's rounding), measured
# on the bank's per-mask tensors while they are drawn: 600 to 750 bytes each (torch 2.x, 64-bit Linux)
_TENSOR_OVERHEAD = 800


def mask_bank_bytes(cfg: DictConfig, input_dim: int) -> int:
    """Peak bytes that grow with K = ``model.num_masks``: the K drawn masks (an int64 ordering of D and a tensor of
    int64 degrees per hidden layer, each with its overhead) and the bank stacked from them; a copy of the bank in
    memory while a checkpoint is serialised; and the (K', eval batch) float32 scores, rows then stacked, when the
    test ensemble combines K' bank masks."""
    num_masks, hidden_sizes = int(cfg.model.num_masks), list(cfg.model.hidden_sizes)
    bank = 8 * (input_dim + sum(hidden_sizes))  # one mask's values in the stacked buffers
    drawn = bank + _TENSOR_OVERHEAD * (1 + len(hidden_sizes))
    ensemble_masks = OmegaConf.select(cfg, "ensemble.num_masks", default=None)
    if OmegaConf.select(cfg, "ensemble.mask_source", default="bank") == "bank":
        ensemble_masks = num_masks if ensemble_masks is None else min(int(ensemble_masks), num_masks)
    eval_batch = int(OmegaConf.select(cfg, "data.eval_batch_size", default=2000))
    return num_masks * (drawn + 2 * bank) + 2 * 4 * int(ensemble_masks or 0) * eval_batch


def available_memory() -> int:
    """Bytes this process may still take: the kernel's MemAvailable, or less under a cgroup (v2 or v1) limit."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:")))
        available *= 1024
    except (OSError, StopIteration, ValueError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            room = int(Path(limit).read_text()) - int(Path(usage).read_text())
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
        available = min(available, max(room, 0))
    return available


def check_mask_bank_memory(cfg: DictConfig, input_dim: int) -> None:
    """ConfigError, before any run dir is written or any mask drawn, when what grows with ``model.num_masks``
    (``mask_bank_bytes``) needs more than the memory available now (``available_memory``). ``model.num_masks=1000000``
    on dna used to pass a check of the bank alone and die a minute later, out of memory."""
    needed, available = mask_bank_bytes(cfg, input_dim), available_memory()
    if needed > available:
        raise ConfigError(
            f"model.num_masks={cfg.model.num_masks} is not allowed here: its masks need about "
            f"{needed / 2**30:.1f} GiB (drawing the bank, a copy in each checkpoint, and the test ensemble's "
            f"scores), more than the {available / 2**30:.1f} GiB available; use fewer masks, masks=fresh, "
            "or a smaller ensemble.num_masks"
        )


def compose_ensemble(name: str, overrides: list[str]) -> DictConfig:
    """``conf/ensemble/<name>.yaml`` composed with ``KEY=VALUE`` overrides of its keys, checked like made-train's."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(overrides=[f"+ensemble={name}", *(f"ensemble.{override}" for override in overrides)])
    validate_config(cfg)
    return cfg.ensemble


_DETAIL_PREFIXES = ("full_key:", "object_type=", "reference_type=", "Set the environment variable")


def _composition_message(error: Exception) -> str:
    """One line from a Hydra/OmegaConf composition error: what was being composed, and what is wrong with it."""
    parts = [str(error)]
    if isinstance(error.__cause__, OmegaConfBaseException):
        parts.append(str(error.__cause__))
    lines = [line.strip() for part in parts for line in part.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith(_DETAIL_PREFIXES))


def _override_message(error: OverrideParseException) -> str:
    """One line for an override Hydra's grammar cannot read (a value with non-ASCII letters, parentheses, ``:``,
    ``!``...), showing it quoted for Hydra inside the shell's quotes."""
    key, sep, value = error.override.partition("=")
    if not sep:
        return _composition_message(error)
    # each value of a sweep (a,b) quoted on its own; a quote inside one is escaped for Hydra
    quoted = ",".join('"' + part.replace('"', '\\"') + '"' for part in value.split(","))
    return (
        f"cannot read the override {error.override!r}: Hydra reads an unquoted value as plain ASCII words and "
        f"paths; quote the value for Hydra, inside the shell's quotes: {shlex.quote(f'{key}={quoted}')}"
    )


# errno -> what it means for the path made-train (or made-eval) was writing
_UNWRITABLE = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "a name in the path is longer than the file system allows (255 bytes)",
}


def _os_error_message(error: OSError) -> str:
    """One line for a directory or file that cannot be written, with where to write instead."""
    problem = _UNWRITABLE[error.errno]
    if error.errno == errno.ENAMETOOLONG:
        hint = "give a shorter hydra.run.dir or hydra.sweep.dir (at most 255 bytes between two slashes)"
    else:
        hint = "write elsewhere: paths.log_dir=DIR (or $MADE_LOG_DIR), hydra.run.dir=DIR or hydra.sweep.dir=DIR"
    return f"cannot write {error.filename or 'the run dir'}: {problem}; {hint}"


@contextmanager
def exit_on_config_error(program: str) -> Iterator[None]:
    """Run a Hydra entry point so that a bad config (composition or range), a run dir that cannot be written
    (permission, read-only file system, a name over 255 bytes) or any other UserError ends in
    ``<program>: error: <one line>`` and exit status 2 (see ``made_exp.errors.exit_on_user_error``).

    Hydra reports its own errors (several lines, exit status 1) unless ``HYDRA_FULL_ERROR`` is set, so it
    is set for the block and its errors come here.
    """
    debug = show_tracebacks()
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with exit_on_user_error(program, debug):
            try:
                yield
            except OverrideParseException as error:
                raise ConfigError(_override_message(error)) from error
            except (HydraException, OmegaConfBaseException) as error:
                raise ConfigError(_composition_message(error)) from error
            except OSError as error:
                if error.errno not in _UNWRITABLE:
                    raise
                raise UserError(_os_error_message(error)) from error
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
