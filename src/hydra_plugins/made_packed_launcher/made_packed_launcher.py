"""The Hydra Launcher plugin: Hydra finds it by scanning ``hydra_plugins``, so this module imports only Hydra;
torch and Lightning load when a sweep launches (``made_exp.lightning.packed_launch``)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PackedLauncher(Launcher):
    """Trains the jobs of a sweep that share tensor shapes as batched models: at most ``max_pack`` runs to a pack,
    ``workers`` packs at once, in threads (None: one per core of this job's share; on a GPU a group is one pack)."""

    def __init__(self, max_pack: int = 64, workers: int | None = None) -> None:
        self.max_pack, self.workers = max_pack, workers

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from made_exp.lightning.packed_launch import launch

        return launch(
            self.hydra_context,
            self.task_function,
            self.config,
            job_overrides,
            initial_job_idx,
            self.max_pack,
            self.workers,
        )
