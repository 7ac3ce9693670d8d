"""User errors (bad data, config or paths): one line, exit status 2, no traceback."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "STOPPED_BY_SIGTERM",
    "STOPPED_BY_SIGINT",
    "UserError",
    "UserErrorInJob",
    "RunDirError",
    "DivergenceError",
    "exit_on_user_error",
]


# made-train's exit statuses when a signal stops it (the shell's 128 + signal number): never 0, so a scheduler
# does not read a stopped run as a finished one
STOPPED_BY_SIGTERM = 128 + signal.SIGTERM
STOPPED_BY_SIGINT = 128 + signal.SIGINT


class UserError(Exception):
    """A problem with what the user gave (file, config, directory), not a bug: its message says what to fix."""


class RunDirError(UserError):
    """A path that is not a usable made-train run directory."""


class DivergenceError(UserError):
    """Training diverged (a non-finite or absurdly large loss): a setting to change, not a bug to trace."""


class UserErrorInJob(BaseException):
    """Carries a UserError out of a Hydra job. Hydra's ``run_job`` catches an ``Exception`` and writes its own
    "Error executing job with overrides" line before raising it again; a BaseException passes through untouched,
    so ``exit_on_user_error`` prints the one line."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error


def show_tracebacks() -> bool:
    """``MADE_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the full traceback of user errors."""
    return os.environ.get("MADE_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def exit_on_user_error(program: str, debug: bool | None = None) -> Iterator[None]:
    """Turn a UserError into ``<program>: error: <message>`` on stderr and exit status 2; ``debug`` (default:
    ``show_tracebacks()``) re-raises it instead."""
    try:
        yield
    except (UserError, UserErrorInJob) as caught:
        error = caught.error if isinstance(caught, UserErrorInJob) else caught
        if show_tracebacks() if debug is None else debug:
            raise error from None
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(2)
