"""Config schema (Hydra ConfigStore) and the checks that run before any data is read.

Hydra's struct mode already rejects unknown keys; the typed schema below rejects wrong
types (``model.num_masks=abc``) at composition, and ``validate_config`` rejects values
outside the allowed choices, naming the key and the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from made_exp.errors import UserError
from made_exp.made import ACTIVATIONS, DIRECT_CONNECTIONS, INITS, RESAMPLE_MODES
from made_exp.masking import OBJECTIVES, SCHEDULES

__all__ = ["MATMUL_PRECISIONS", "ConfigError", "ModelSchema", "MasksSchema", "validate_config", "register_configs"]

MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message names the key and the allowed values."""


@dataclass
class ModelSchema:
    _target_: str = "made_exp.made.MADE"
    hidden_sizes: list[int] = field(default_factory=lambda: [500])
    activation: str = "relu"
    direct_connection: str = "none"
    init: str = "default"
    num_masks: int = 1
    resample: str = "full"
    natural_ordering: bool = False
    condition_on_mask: bool = False
    seed: int = 0


@dataclass
class MasksSchema:
    _target_: str = "made_exp.masking.MaskSchedule"
    schedule: str = "cycle"
    objective: str = "nll"
    samples_per_step: int = 1
    val_num_masks: int = 1


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="model", node=ModelSchema)
    store.store(group="schema", name="masks", node=MasksSchema)


def _require_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _require_at_least(key: str, value, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{key}={value} must be >= {minimum}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for an invalid value before anything is built or read."""
    model, masks = cfg.model, cfg.masks
    _require_choice("matmul_precision", cfg.get("matmul_precision", "highest"), MATMUL_PRECISIONS)
    _require_choice("model.activation", model.activation, tuple(ACTIVATIONS))
    _require_choice("model.direct_connection", model.direct_connection, DIRECT_CONNECTIONS)
    _require_choice("model.init", model.init, INITS)
    _require_choice("model.resample", model.resample, RESAMPLE_MODES)
    if not model.hidden_sizes or min(model.hidden_sizes) < 1:
        raise ConfigError(f"model.hidden_sizes={list(model.hidden_sizes)} must be a non-empty list of positive widths")
    _require_at_least("model.num_masks", model.num_masks, 1)
    _require_choice("masks.schedule", masks.schedule, SCHEDULES)
    _require_choice("masks.objective", masks.objective, OBJECTIVES)
    _require_at_least("masks.samples_per_step", masks.samples_per_step, 1)
    _require_at_least("masks.val_num_masks", masks.val_num_masks, 1)
    _require_at_least("ensemble.num_masks", cfg.ensemble.get("num_masks"), 1)
