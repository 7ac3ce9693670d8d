"""Optuna search behind Hydra's multirun (``hydra/sweeper=optuna_tpe``, Optuna >= 4).

The sweeper (``hydra_plugins.made_optuna_sweeper``) opens the study, asks Optuna for a batch of
``n_jobs`` trials, launches them through the configured Hydra launcher (job number = trial
number, so job dirs never collide between workers) and tells Optuna their values. A job that
returns NaN or raises is told as failed; the search goes on. A job that its trial's pruner stopped
(``results.json``'s ``stopped_by: pruned``, ``made_exp.runs.pruning``) is told as pruned.

- Storage: a journal file (``journal:<path>``, shared through a file lock) or any SQLAlchemy URL; the study is
  created or, when it exists, continued.
- ``n_trials`` is the study's total: a worker stops asking once the study holds that many trials
  (finished, failed or interrupted, from any worker), so rerunning a search continues it and
  several workers share it.
- Seeds: each worker seeds its sampler from (``seed``, trials in the study when it starts), with a
  ``seed`` of its own drawn at random when none is given, so two workers never share a sampler
  stream and a fixed ``seed`` on a fresh study reproduces one worker.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from made_exp.runs.atomic import write_text_atomic
from made_exp.runs.config import ConfigError
from made_exp.runs.records import read_record
from made_exp.runs.rundir import RunDir
from made_exp.runs.sweep import PRUNED

__all__ = [
    "search_space",
    "open_study",
    "study_storage",
    "storage_errors",
    "storage_error_message",
    "sampler_seed",
    "check_batches",
    "run_search",
    "write_best",
    "PRUNED",
]

log = logging.getLogger(__name__)
JOURNAL = "journal:"  # hydra.sweeper.storage=journal:<path>: Optuna's JournalStorage on a file

# launch(overrides per job, number of the first job) -> one JobReturn per job
Launch = Callable[[list[list[str]], int], Sequence[JobReturn]]


def search_space(params: Mapping[str, str], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split ``params`` (key -> Hydra override value) and the command line into Optuna distributions
    (sweeps: ``choice``, ``a,b``, ``range``, ``interval``, ``tag(log, interval(...))``) and fixed
    overrides; a key given on the command line replaces the same key in ``params``."""
    parser = OverridesParser.create()
    overrides: dict[str, Override] = {}
    for override in parser.parse_overrides([f"{key}={value}" for key, value in params.items()]):
        overrides[override.key_or_group] = override
    for override in parser.parse_overrides(list(arguments)):
        overrides[override.key_or_group] = override
    distributions = {key: _distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
    fixed = [o.input_line for o in overrides.values() if not o.is_sweep_override()]
    return distributions, fixed


def _distribution(override: Override) -> BaseDistribution:
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return FloatDistribution(sweep.start, sweep.end, log="log" in sweep.tags)
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if all(isinstance(value, int) for value in values):
            return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
        return FloatDistribution(min(values), max(values), step=abs(sweep.step))
    if isinstance(sweep, ChoiceSweep):
        # as override strings, so that lists ([500,500]) are choices too and launch as written
        return CategoricalDistribution(list(override.sweep_string_iterator()))
    raise ConfigError(f"{override.input_line}: cannot search over this; use choice, range or interval")


def open_study(
    study_name: str,
    storage: str,
    direction: str,
    sampler: Callable[..., optuna.samplers.BaseSampler],
    seed: int | None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study in ``storage`` (see ``study_storage``), or load it if it exists, with its sampler seeded
    for this worker (``sampler(seed=...)``) and ``pruner`` (None: Optuna's default)."""
    opened, shown = study_storage(storage)
    trials_before = _count_trials(opened, study_name)
    study = optuna.create_study(
        study_name=study_name,
        storage=opened,
        direction=direction,
        load_if_exists=True,
        sampler=sampler(seed=sampler_seed(seed, trials_before)),
        pruner=pruner,
    )
    log.info(f"study {study_name!r} in {shown}: {trials_before} trials so far")
    return study


def study_storage(storage: str) -> tuple[optuna.storages.BaseStorage, str]:
    """Optuna's storage for ``storage`` and how to show it (no password): ``journal:<path>`` (or
    ``journal:///<absolute path>``) is a journal file, which workers share through a file lock, on NFS too; anything
    else is a SQLAlchemy URL (SQLite, PostgreSQL, ...). A file's directory is created."""
    if storage.startswith(JOURNAL):
        path = Path(storage.removeprefix(JOURNAL).removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path))), storage
    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError as error:
        raise ConfigError(
            f"hydra.sweeper.storage={storage!r} is neither journal:<file> nor a SQLAlchemy URL ({error})"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return _rdb_storage(storage), url.render_as_string(hide_password=True)


@contextmanager
def storage_errors(storage: str) -> Iterator[None]:
    """Turn a failure of the study's storage (opening it, or writing a trial) into a ConfigError of one line: the
    URL (password hidden), the database's own first line, and what to do."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        raise ConfigError(storage_error_message(storage, error)) from error


def storage_error_message(storage: str, error: BaseException) -> str:
    """``hydra.sweeper.storage=<url>: <the real cause>; <hint>`` for an error raised by SQLAlchemy or Optuna."""
    try:
        shown = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        shown = storage
    cause = error
    while not isinstance(cause, sqlalchemy.exc.SQLAlchemyError) and cause.__cause__ is not None:
        cause = cause.__cause__  # Optuna's StorageInternalError hides the database's error behind its own
    if isinstance(cause, sqlalchemy.exc.NoSuchModuleError):
        backend = shown.split(":", 1)[0]
        return (
            f"hydra.sweeper.storage={shown}: no database driver {backend!r} is installed; use a SQLAlchemy URL "
            "such as sqlite:///path/optuna.db or postgresql+psycopg://user:password@host/db (with its driver)"
        )
    reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
    if "readonly" in reason or "read-only" in reason:
        hint = (
            "the database (or its directory) is not writable here: make it writable, or copy it and point to the copy"
        )
    elif isinstance(cause, sqlalchemy.exc.OperationalError):
        hint = "check that the server runs and is reachable from this machine, and the URL's host, port and credentials"
    else:
        hint = "check the URL and the database (optuna storage docs: https://optuna.readthedocs.io)"
    return f"hydra.sweeper.storage={shown}: {reason}; {hint}"


def _rdb_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url``, tried again after a second if creating its tables fails: workers
    started together on a new database race to create them, and all but one lose."""

    def connect() -> optuna.storages.RDBStorage:
        # pre-ping: a server may drop a connection left idle while a long trial runs
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})

    for _ in range(attempts - 1):
        try:
            return connect()
        except sqlalchemy.exc.DBAPIError as error:
            log.info(f"storage not ready ({type(error.orig).__name__}), trying again in a second")
            time.sleep(1.0)
    return connect()


def _count_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:  # a new study
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def sampler_seed(seed: int | None, trials_before: int) -> int:
    """This worker's sampler seed: ``seed`` (drawn at random if None, and logged) mixed with the
    number of trials the study held when the worker started, so a continued search does not
    repeat its first proposals."""
    if seed is None:
        seed = secrets.randbits(32)
        log.info(
            f"sampler seed {seed}: hydra.sweeper.seed={seed} repeats this worker's proposals "
            f"on a study of {trials_before} trials"
        )
    return int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])


def check_batches(n_trials: int, n_jobs: int) -> None:
    """Refuse ``n_trials`` < 0 or ``n_jobs`` < 1 before any study is opened."""
    if n_trials < 0:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials}: must be >= 0 (the study's total number of trials)")
    if n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs}: must be >= 1 (trials asked per batch)")


def run_search(
    study: optuna.Study,
    distributions: dict[str, BaseDistribution],
    fixed: list[str],
    n_trials: int,
    n_jobs: int,
    launch: Launch,
) -> list[list[JobReturn]]:
    """Ask ``n_jobs`` trials at a time until the study holds ``n_trials``, launch them, tell the results."""
    batches = []
    while (remaining := n_trials - len(study.get_trials(deepcopy=False))) > 0:
        trials = [study.ask(distributions) for _ in range(min(n_jobs, remaining))]
        for run in _consecutive_runs(trials):
            batches.append(_launch_and_tell(study, run, fixed, launch))
    return batches


def _consecutive_runs(trials: list[Trial]) -> list[list[Trial]]:
    """Trials with consecutive numbers (job numbers follow trial numbers; another worker may interleave)."""
    runs: list[list[Trial]] = []
    for trial in trials:
        if runs and runs[-1][-1].number + 1 == trial.number:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def _launch_and_tell(study: optuna.Study, trials: list[Trial], fixed: list[str], launch: Launch) -> list[JobReturn]:
    overrides = [[*fixed, *(f"{key}={_as_override(value)}" for key, value in trial.params.items())] for trial in trials]
    try:
        returns = launch(overrides, trials[0].number)
    except BaseException:  # e.g. Ctrl-C: the trials are not left running in the study forever
        for trial in trials:
            study.tell(trial, state=TrialState.FAIL)
        raise
    for trial, job, job_overrides in zip(trials, returns, overrides, strict=True):
        value = _value(job)
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} failed: {' '.join(job_overrides)}")
        elif _pruned(job):
            study.tell(trial, state=TrialState.PRUNED)  # Optuna keeps its last reported val/nll as its value
            log.info(f"trial {trial.number} pruned: {' '.join(job_overrides)}")
        else:
            study.tell(trial, value)
    return list(returns)


def _as_override(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _value(job: JobReturn) -> float | None:
    """The job's objective, or None if it raised or returned no finite number (NaN: a failed run)."""
    if job.status is not JobStatus.COMPLETED or job.return_value is None:
        return None
    value = float(job.return_value)
    return value if math.isfinite(value) else None


def _pruned(job: JobReturn) -> bool:
    """Whether ``job`` ran a trial that its pruner stopped (its ``results.json`` says so)."""
    output_dir = OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir") if job.hydra_cfg is not None else None
    if output_dir is None:
        return False
    results = RunDir(output_dir).results
    return results.is_file() and read_record(results).get("stopped_by") == PRUNED


def write_best(study: optuna.Study, path: Path) -> None:
    """Write the study's best trial (over every worker) to ``path`` (YAML); a warning if none finished."""
    if not study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        log.warning(f"no trial of study {study.study_name!r} finished; {path.name} not written")
        return
    best = study.best_trial
    write_text_atomic(
        path,
        yaml.safe_dump(
            {
                "name": "optuna",
                "study_name": study.study_name,
                "best_trial": best.number,
                "best_value": best.value,
                "best_params": best.params,
            },
            sort_keys=False,
        ),
    )
    log.info(f"best trial {best.number}: {best.value:.4f} with {best.params} ({path})")
