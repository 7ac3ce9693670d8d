"""Which code a run ran: the git commit of a made_exp checkout, or the installed package's version."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from made_exp import __version__

__all__ = ["git_commit", "package_version"]


@functools.cache
def git_commit() -> str:
    """The commit of the code this process runs (``+dirty`` for uncommitted changes), or ``unknown`` when the
    package does not run from a made_exp checkout (an installed wheel, even inside another git repo).

    Read once, the first time it is asked: made-train asks before its first job, and a sweep's later jobs run
    the code loaded then, whatever the checkout has moved on to since.
    """
    package = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(top) / "src" / "made_exp").resolve() != package:
            return "unknown"
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=package,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_version() -> str:
    """The made_exp version this process runs (what a wheel records where there is no git checkout): the package's
    own ``__version__``, which the installed metadata is built from, and which an editable install cannot leave
    stale."""
    return __version__
