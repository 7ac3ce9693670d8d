"""Torch's intra-op thread count from the job's share of the CPUs.

torch starts with one thread per core of the machine, whatever a scheduler gave the job: a SLURM
job with ``cpus_per_task=1`` on a 64-core node would run 64 threads on one core. In order:
``MADE_NUM_THREADS`` or ``OMP_NUM_THREADS`` if set, ``SLURM_CPUS_PER_TASK`` under SLURM, ``cpus_per_task``
under submitit's local launcher (``hydra/launcher=local_queue``), the cores divided by ``n_jobs`` in a
joblib (``hydra/launcher=parallel``) sweep, else torch's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from hydra.core.hydra_config import HydraConfig

__all__ = ["job_threads", "set_job_threads"]

EXPLICIT = ("MADE_NUM_THREADS", "OMP_NUM_THREADS")


def job_threads(
    environ: Mapping[str, str], cpu_count: int, parallel_jobs: int | None = None, launcher_cpus: int | None = None
) -> int | None:
    """Threads for this job: an explicit setting, its SLURM CPUs, the ``cpus_per_task`` of submitit's local
    launcher (which runs every job at once and sets no variable for it), or ``cpu_count // parallel_jobs``
    (at least 1); None where nothing limits it (torch's default stays)."""
    for name in (*EXPLICIT, "SLURM_CPUS_PER_TASK"):
        if environ.get(name):
            return max(int(environ[name]), 1)
    if launcher_cpus:
        return launcher_cpus
    if parallel_jobs is not None:
        jobs = parallel_jobs if parallel_jobs > 0 else cpu_count  # joblib: n_jobs=-1 is one job per core
        return max(cpu_count // jobs, 1)
    return None


def _parallel_jobs() -> int | None:
    """``n_jobs`` of the joblib launcher running this job, None under any other launcher or outside Hydra."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    return int(launcher.n_jobs) if "joblib" in launcher.get("_target_", "") else None


def _local_submitit_cpus() -> int | None:
    """``cpus_per_task`` of submitit's local launcher (``hydra/launcher=local_queue``) running this job, else None."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    if "LocalLauncher" not in launcher.get("_target_", "") or not launcher.get("cpus_per_task"):
        return None
    return int(launcher.cpus_per_task)


def set_job_threads() -> int:
    """Set torch's intra-op threads to :func:`job_threads`; returns the count torch now uses."""
    threads = job_threads(os.environ, os.cpu_count() or 1, _parallel_jobs(), _local_submitit_cpus())
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
