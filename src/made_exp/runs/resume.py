"""``made-train resume=<run dir>``: the run's own overrides, checked before Hydra touches the run, and a lock.

A resumed run is composed from the overrides it was started with (``.hydra/overrides.yaml``), so
``made-train resume=<dir>`` alone continues it. The command line may add keys, and may set the training budget
(``trainer.max_epochs``, ``trainer.max_time``) anew, e.g. to train a capped run on to early stopping; any other
saved key it contradicts is refused before anything in the run dir changes.
A lock file keeps a second resume of the same run out while the first is alive, and a resume refused inside the
job leaves the run's ``.hydra/`` record as it was.

The run dir is taken as written, whatever it holds: a multirun job's dir (``3_data=dna,seed=1``) has the
``=`` and ``,`` that Hydra's override grammar would split on, so the value is quoted for Hydra here.

Examples:
    >>> override_key("+trainer.max_time=00:01:00:00"), override_key("~callbacks.rich_progress_bar")
    ('trainer.max_time', 'callbacks.rich_progress_bar')
    >>> hydra_resume_argument("runs/3_data=dna,seed=1")
    "resume='runs/3_data=dna,seed=1'"
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from made_exp.errors import UserErrorInJob
from made_exp.runs.config import ConfigError
from made_exp.runs.rundir import RunDir, check_checkpoint

__all__ = [
    "TRAINING_BUDGET",
    "override_key",
    "resumed_run",
    "resume_arguments",
    "hydra_resume_argument",
    "last_checkpoint",
    "lock_run",
    "record_kept_if_refused",
]

_RESUME_ONLY = ("resume", "overwrite")  # keys of the resuming command, not of the run
TRAINING_BUDGET = ("trainer.max_epochs", "trainer.max_time")  # how long to train on: the resuming command's say


def override_key(override: str) -> str:
    """The config key a Hydra override sets (without ``+``, ``++`` or ``~``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _saved_overrides(run_dir: Path) -> list[str]:
    path = RunDir(run_dir).overrides
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {path} (is it a made-train run dir?)")
    return [o for o in OmegaConf.to_container(OmegaConf.load(path)) if override_key(o) not in _RESUME_ONLY]


def _value(arguments: list[str], key: str) -> str | None:
    value = next((a.split("=", 1)[1] for a in arguments if override_key(a) == key and "=" in a), None)
    return None if value in (None, "", "null") else _unquoted(value)


def _unquoted(value: str) -> str:
    """``value`` without the quotes of a Hydra quoted string (``'a=b'`` or ``"a=b"``), else as it is."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0])
    return value


def hydra_resume_argument(run_dir: str) -> str:
    """``resume=<run_dir>`` quoted so that Hydra's override grammar reads any path (as written, unquoted) as one
    string; ``_unquoted`` reads it back."""
    path = run_dir.replace("'", "\\'")
    return f"resume='{path}'"


def resumed_run(arguments: list[str]) -> Path | None:
    """The run dir that command-line ``arguments`` resume (``resume=<dir>``), if any."""
    resume = _value(arguments, "resume")
    return None if resume is None else Path(resume)


def last_checkpoint(run_dir: Path, overwrite: bool) -> Path:
    """``<run_dir>/checkpoints/last.ckpt``, the state a resumed run continues from; a finished run
    (with ``results.json``) is only reopened with ``overwrite=true``."""
    checkpoint = RunDir(run_dir).last_checkpoint
    if not checkpoint.is_file():
        raise ConfigError(f"resume={run_dir}: no {checkpoint} to resume from (is it a made-train run dir?)")
    if RunDir(run_dir).is_finished() and not overwrite:
        raise ConfigError(f"resume={run_dir}: that run has finished (results.json); pass overwrite=true to redo it")
    return check_checkpoint(checkpoint)


def resume_arguments(arguments: list[str]) -> list[str]:
    """Command-line ``arguments`` with the resumed run's saved overrides put first (unchanged without ``resume=``),
    after checking that the run can be resumed; ConfigError when an argument sets a saved key to another value."""
    run_dir = resumed_run(arguments)
    if run_dir is None:
        return arguments
    last_checkpoint(run_dir, overwrite=_value(arguments, "overwrite") in ("true", "True"))
    resume = str(run_dir)
    saved = _saved_overrides(run_dir)
    saved_by_key = {override_key(o): o for o in saved}  # the last of a repeated key wins, as in Hydra
    given_by_key = {override_key(a): a for a in arguments}
    for key, argument in given_by_key.items():
        if key in saved_by_key and argument != saved_by_key[key] and key not in TRAINING_BUDGET:
            raise ConfigError(
                f"resume={resume}: {argument} contradicts the run's own {saved_by_key[key]} "
                f"(leave it out: the run's overrides are used; only {' and '.join(TRAINING_BUDGET)} "
                "may be set anew)"
            )
    saved = [o for o in saved if not (override_key(o) in TRAINING_BUDGET and override_key(o) in given_by_key)]
    arguments = [hydra_resume_argument(resume) if override_key(a) == "resume" else a for a in arguments]
    return [o for o in saved if o not in arguments] + arguments


def lock_run(run_dir: Path) -> None:
    """Hold ``<run dir>/.resume.lock`` until this process exits; ConfigError if a live process holds it."""
    lock = RunDir(run_dir).resume_lock
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder_alive(lock):
                raise ConfigError(
                    f"resume={run_dir}: another made-train (pid {lock.read_text().strip()}) is "
                    f"resuming this run; remove {lock} if it is not"
                ) from None
            lock.unlink(missing_ok=True)  # left by a process that died
            continue
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        atexit.register(lock.unlink, missing_ok=True)
        return
    raise ConfigError(f"resume={run_dir}: could not take {lock}")


@contextmanager
def record_kept_if_refused(run_dir: Path | None) -> Iterator[None]:
    """A resume refused inside the job (bad input found after Hydra rewrote the run's ``.hydra/`` for it) leaves
    the run's record as it was, so that ``resume=<run dir>`` still continues the run it was."""
    files = [] if run_dir is None else [RunDir(run_dir).config, RunDir(run_dir).overrides, RunDir(run_dir).hydra_config]
    kept = {path: path.read_bytes() for path in files if path.is_file()}
    try:
        yield
    except UserErrorInJob:
        for path, content in kept.items():
            path.write_bytes(content)
        raise


def _holder_alive(lock: Path) -> bool:
    try:
        os.kill(int(lock.read_text().strip()), 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return True
