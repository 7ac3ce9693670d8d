"""Optuna pruning for a search (``hydra.sweeper.pruner``), the study's side: no Lightning here.

The sweeper picks the pruner by name from ``hydra.sweeper.pruners`` and refuses a launcher that cannot prune. A
trial's job (job number = trial number, ``made_exp.runs.search``) opens its own running trial in the study with
the same pruner (``open_trial``); ``made_exp.lightning.pruning`` reports to it each epoch. The sweeper tells a
job whose ``results.json`` says ``stopped_by: pruned`` as PRUNED (``sweep.PRUNED``).
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from made_exp.runs.config import ConfigError
from made_exp.runs.search import storage_errors, study_storage

__all__ = ["NO_PRUNER", "choose_pruner", "check_launcher", "open_trial"]

NO_PRUNER = "none"


def choose_pruner(name: str | None, pruners: Mapping[str, optuna.pruners.BasePruner]) -> optuna.pruners.BasePruner:
    """The pruner ``hydra.sweeper.pruner=<name>`` picks from ``pruners``; Optuna's NopPruner for ``none``."""
    if name in (None, NO_PRUNER):
        return optuna.pruners.NopPruner()
    if name not in pruners:
        choices = ", ".join([NO_PRUNER, *pruners])
        raise ConfigError(f"hydra.sweeper.pruner={name}: no such pruner; choose one of {choices}")
    return pruners[name]


def check_launcher(name: str | None, launcher_target: str) -> None:
    """Refuse the packed launcher with a pruner: a pack trains its runs in step, so one cannot stop alone."""
    if name not in (None, NO_PRUNER) and launcher_target.endswith(".PackedLauncher"):
        raise ConfigError(
            f"hydra.sweeper.pruner={name} does not work with hydra/launcher=packed (a pack trains its runs in step, "
            "so none stops alone); use hydra/launcher=basic or parallel, or hydra.sweeper.pruner=none"
        )


def open_trial(study_name: str, storage: str, pruner: optuna.pruners.BasePruner, number: int) -> optuna.trial.Trial:
    """Trial ``number`` of the study in ``storage`` (see ``search.study_storage``), opened with ``pruner``, so that
    this process reports to it and asks whether to prune it."""
    with storage_errors(storage):
        opened, _ = study_storage(storage)
        study = optuna.load_study(study_name=study_name, storage=opened, pruner=pruner)
        trial_id = opened.get_trial_id_from_study_id_trial_number(opened.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)
