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
import errno
import fcntl
import functools
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import yaml

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
_NO_OS_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)  # flock refused by the filesystem


def override_key(override: str) -> str:
    """The config key a Hydra override sets (without ``+``, ``++`` or ``~``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _saved_overrides(run_dir: Path) -> list[str]:
    path = RunDir(run_dir).overrides
    if not path.is_file():
        raise ConfigError(f"resume={run_dir}: no {path} (is it a made-train run dir?)")
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        unreadable = f"{path} is unreadable ({_first_line(error)})"
        raise ConfigError(f"resume={run_dir}: {unreadable}; nothing was changed") from None
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise ConfigError(f"resume={run_dir}: {path} is not a list of overrides; nothing was changed")
    return [o for o in saved if override_key(o) not in _RESUME_ONLY]


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


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
    return _made_checkpoint(check_checkpoint(checkpoint))


def _made_checkpoint(path: Path) -> Path:
    """``path`` if it holds what made-train (or a pack) writes: MADE weights and a training loop's state;
    ConfigError naming it otherwise (checked before anything in the run dir changes)."""
    import torch  # here: a command line without resume= composes its config before torch loads

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # a pickle of anything: whatever it raises, the file is not ours
        raise ConfigError(f"{path}: not a made-train checkpoint ({_first_line(error)}); nothing was changed") from None
    weights = state.get("state_dict") if isinstance(state, dict) else None
    made = isinstance(weights, dict) and any(str(name).startswith("model.") for name in weights)
    if not made or not ("loops" in state or "packed" in state):
        raise ConfigError(
            f"{path}: not a made-train checkpoint (no MADE weights and training state in it); nothing was changed"
        )
    return path


def resume_arguments(arguments: list[str]) -> list[str]:
    """Command-line ``arguments`` with the resumed run's saved overrides put first, after any of Hydra's options
    (unchanged without ``resume=``), after checking that the run can be resumed; ConfigError when an argument sets
    a saved key to another value."""
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
    # after Hydra's options (--config-dir DIR, --cfg job, ...): argparse takes them only before the overrides
    first_override = next((i for i, a in enumerate(arguments) if "=" in a and not a.startswith("-")), len(arguments))
    return [*arguments[:first_override], *(o for o in saved if o not in arguments), *arguments[first_override:]]


def lock_run(run_dir: Path) -> Callable[[], None]:
    """Hold ``<run dir>/.resume.lock`` until this process exits (or the returned function is called);
    ConfigError if another process holds it.

    The lock is an OS lock (``flock``) on the file, held while this process lives, which every host sharing the
    filesystem sees where the filesystem forwards locks (local disks, NFSv4, Lustre mounted with ``flock``); the file
    records the holder's host, pid and start time. A lock file that no process holds is stale (its holder died),
    whichever host wrote it, and is taken over. Where the filesystem refuses OS locks, the record decides: one from
    this host is held while its pid lives, one from another host is held until removed by hand.
    """
    lock = RunDir(run_dir).resume_lock
    for _ in range(3):
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _os_lock(descriptor)
            if locked is False or (locked is None and _record_held(_holder(lock))):
                raise ConfigError(_held_message(run_dir, lock, os_lock=locked is False))
            if not _same_file(descriptor, lock):  # its holder removed it as it exited: lock the new one
                os.close(descriptor)
                continue
        except BaseException:
            os.close(descriptor)
            raise
        _write_holder(descriptor)
        release = functools.partial(_release, lock, descriptor)
        atexit.register(release)
        return release
    raise ConfigError(f"resume={run_dir}: could not take {lock}")


def _os_lock(descriptor: int) -> bool | None:
    """True: this process now holds the OS lock; False: another process does; None: no OS locks here."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_OS_LOCKS:
            return None
        raise
    return True


def _same_file(descriptor: int, lock: Path) -> bool:
    try:
        return os.fstat(descriptor).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _write_holder(descriptor: int) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now().astimezone().isoformat()}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)


def _release(lock: Path, descriptor: int) -> None:
    """Remove the lock file, then let go of the OS lock (one waiting on the removed file then sees it is gone)."""
    try:
        if _same_file(descriptor, lock):
            lock.unlink(missing_ok=True)
        os.close(descriptor)
    except OSError:  # released already
        pass


def _holder(lock: Path) -> dict:
    """The lock file's record: host, pid, started; an older made-train's file holds a pid alone (this host's)."""
    try:
        text = lock.read_text().strip()
    except FileNotFoundError:
        return {}
    if text.isdigit():
        return {"host": socket.gethostname(), "pid": int(text)}
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _record_held(holder: dict) -> bool:
    """Without OS locks: a holder on this host is alive if its pid is; one on another host counts as alive."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _held_message(run_dir: Path, lock: Path, os_lock: bool) -> str:
    holder = _holder(lock)
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    if os_lock:
        return f"resume={run_dir}: another made-train ({who}) is resuming this run ({lock} is locked)"
    return (
        f"resume={run_dir}: another made-train ({who}) is resuming this run; this filesystem has no OS locks, so "
        f"if that process is gone, remove {lock}"
    )


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
