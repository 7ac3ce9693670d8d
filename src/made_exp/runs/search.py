"""Optuna search behind Hydra's multirun (``hydra/sweeper=optuna_tpe``, Optuna >= 4).

The sweeper (``hydra_plugins.made_optuna_sweeper``) opens the study, asks Optuna for a batch of
``n_jobs`` trials, launches them through the configured Hydra launcher (job number = trial
number, so job dirs never collide between workers) and tells Optuna their values. A job that
returns NaN or raises is told as failed; the search goes on.

- Storage: any SQLAlchemy URL; the study is created or, when it exists, continued.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from made_exp.runs.atomic import write_text_atomic
from made_exp.runs.config import ConfigError

__all__ = ["search_space", "open_study", "sampler_seed", "check_batches", "run_search", "write_best"]

log = logging.getLogger(__name__)

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
    study_name: str, storage: str, direction: str, sampler: Callable[..., optuna.samplers.BaseSampler], seed: int | None
) -> optuna.Study:
    """Create the study in ``storage`` (a SQLAlchemy URL), or load it if it exists, with its sampler
    seeded for this worker (``sampler(seed=...)``); a SQLite file's directory is created."""
    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError as error:
        raise ConfigError(f"hydra.sweeper.storage={storage!r} is not a SQLAlchemy URL ({error})") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    rdb = _rdb_storage(storage)
    trials_before = _count_trials(rdb, study_name)
    study = optuna.create_study(
        study_name=study_name,
        storage=rdb,
        direction=direction,
        load_if_exists=True,
        sampler=sampler(seed=sampler_seed(seed, trials_before)),
    )
    log.info(f"study {study_name!r} in {url.render_as_string(hide_password=True)}: {trials_before} trials so far")
    return study


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
