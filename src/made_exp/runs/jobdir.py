"""A sweep job's dir name (``hydra.sweep.subdir``): its number and overrides, always one path component.

Hydra names a job's dir after its overrides (``hydra.job.override_dirname``). A value holding ``/``
(``data.path=/a/good.npy``) would nest the dir, and a long value would pass the file system's 255-byte limit on a
name. Such a name gets each ``/`` as ``_``, is cut to ``MAX_NAME_BYTES`` and ends in a short hash of the full
name, so that two jobs never share a dir and a rerun of the sweep finds each job's dir again. Every other name is
Hydra's, unchanged. The job's overrides are kept whole in its ``.hydra/overrides.yaml``.

Example:
    >>> job_dir_name(3, "data=dna,seed=1")
    '3_data=dna,seed=1'
    >>> job_dir_name(0, "data.path=/a/good.npy")
    '0_data.path=_a_good.npy-31798f98'
    >>> len(job_dir_name(1, "data.name=" + "x" * 300).encode())
    200
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_NAME_BYTES", "job_dir_name"]

MAX_NAME_BYTES = 200  # under the usual 255-byte limit, with room for a tool that adds a suffix


def job_dir_name(number: int, override_dirname: str) -> str:
    """``<number>_<override_dirname>``, made one path component of at most ``MAX_NAME_BYTES`` bytes."""
    name = f"{number}_{override_dirname}"
    if "/" not in name and len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    kept = name.replace("/", "_").encode()[: MAX_NAME_BYTES - len(digest)]
    return kept.decode(errors="ignore") + digest
