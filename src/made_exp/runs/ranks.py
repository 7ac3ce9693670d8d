"""Which process of a distributed job this is, read from the launcher's environment (as Lightning reads it),
without importing torch: only rank 0 writes a run's shared files."""

from __future__ import annotations

import os

__all__ = ["process_rank"]

_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def process_rank() -> int:
    """The global rank set by torchrun, Lightning's relaunch, srun or jsrun; 0 for a single process."""
    for name in _RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0
