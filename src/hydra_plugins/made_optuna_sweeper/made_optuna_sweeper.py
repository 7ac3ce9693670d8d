"""The Hydra Sweeper plugin: Hydra finds it by scanning ``hydra_plugins``, so this module imports
only Hydra; Optuna is imported when a search starts (``made_exp.runs.search``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class MadeOptunaSweeper(Sweeper):
    """Optuna search over ``params`` (Hydra override syntax), trials launched by the configured launcher."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        sampler: Callable[..., Any],
        params: DictConfig | None = None,
        pruner: str | None = None,
        pruners: dict[str, Any] | None = None,
    ) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.sampler = sampler
        self.pruner, self.pruners = pruner, dict(pruners or {})  # pruners: by name, instantiated by Hydra
        self.params = OmegaConf.to_container(params) if params is not None else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list:
        from made_exp.runs import pruning, search

        # bad settings raise ConfigError, which made-train reports in one line (exit 2)
        search.check_batches(self.n_trials, self.n_jobs)
        pruner = pruning.choose_pruner(self.pruner, self.pruners)
        pruning.check_launcher(self.pruner, self.config.hydra.launcher._target_)
        distributions, fixed = search.search_space(self.params, arguments)
        with search.storage_errors(self.storage):  # one line naming the cause: driver, server, read-only file
            study = search.open_study(self.study_name, self.storage, self.direction, self.sampler, self.seed, pruner)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def launch(overrides: list[list[str]], first_job: int) -> list:
            self.validate_batch_is_legal(overrides)
            return self.launcher.launch(overrides, initial_job_idx=first_job)

        with search.storage_errors(self.storage):
            batches = search.run_search(study, distributions, fixed, self.n_trials, self.n_jobs, launch)
        search.write_best(study, sweep_dir / "optimization_results.yaml")
        return batches
