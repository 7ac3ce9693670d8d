"""A sweep that SLURM refuses to take (``hydra/launcher=slurm``): sbatch's own error, and the key to set, in one line.

submitit raises its ``FailedJobError`` with sbatch's stderr when ``sbatch`` refuses the job array, e.g. a GPU
asked of a cluster without GPUs ("Invalid generic resource (gres) specification"). Which launcher key asked for
what sbatch refused is read from its message (``KEYS_BY_MESSAGE``).

Example:
    >>> line = sbatch_message("sbatch: error: Invalid generic resource (gres) specification\\n")
    >>> line.split("; ")[0], "hydra.launcher.gpus_per_node" in line
    ('SLURM refused the jobs: Invalid generic resource (gres) specification', True)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from made_exp.errors import UserError

__all__ = ["KEYS_BY_MESSAGE", "sbatch_message", "sbatch_refusals_as_user_errors"]

# a fragment of sbatch's error (lower case) -> the hydra.launcher keys that ask for it
KEYS_BY_MESSAGE = {
    "gres": "hydra.launcher.gpus_per_node (0 on a cluster without GPUs)",
    "partition": "hydra.launcher.partition",
    "memory": "hydra.launcher.mem_gb",
    "time limit": "hydra.launcher.timeout_min",
    "node configuration is not available": (
        "hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, tasks_per_node or nodes"
    ),
}


def sbatch_message(stderr: str) -> str:
    """One line from sbatch's stderr: what it refused and which launcher key to set."""
    errors = [line.split("error:", 1)[1].strip() for line in stderr.splitlines() if "error:" in line]
    refused = "; ".join(errors) or stderr.strip().splitlines()[-1]
    keys = [key for fragment, key in KEYS_BY_MESSAGE.items() if fragment in refused.lower()]
    keys = keys[:1] if len(keys) > 1 else keys  # the most specific: KEYS_BY_MESSAGE lists the generic one last
    setting = " and ".join(keys) or "the hydra.launcher keys (partition, gpus_per_node, cpus_per_task, mem_gb)"
    return (
        f"SLURM refused the jobs: {refused}; set {setting} to what the cluster offers "
        '(sinfo -o "%P %c %m %G" lists its partitions, CPUs, memory and GPUs)'
    )


@contextmanager
def sbatch_refusals_as_user_errors() -> Iterator[None]:
    """A job array that sbatch refuses becomes a UserError of one line (``sbatch_message``); other errors pass."""
    try:
        yield
    except Exception as error:
        # by name: submitit is only imported by the SLURM launcher
        if type(error).__name__ != "FailedJobError" or "sbatch:" not in str(error):
            raise
        raise UserError(sbatch_message(str(error))) from error
