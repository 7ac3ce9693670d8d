"""Optuna search (made_exp.runs.search, hydra/sweeper=optuna_tpe): search space from Hydra override syntax,
study storage (SQLite by default, PostgreSQL), continuing a search, workers' sampler seeds, failed trials;
end to end through made-train with SQLite and with two workers on a real PostgreSQL server."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import compose_train
from made_exp.runs.config import ConfigError
from made_exp.runs.search import (
    _consecutive_runs,
    check_batches,
    open_study,
    run_search,
    search_space,
    study_storage,
    write_best,
)

BIN = Path(sys.executable).parent
DATA_DIR = os.environ.get("MADE_DATA_DIR")
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="set MADE_DATA_DIR to the paper's data (../shared/data)")
# one search dimension (lr), two optimiser steps per trial
TINY_SEARCH = [
    "-m",
    "hydra/sweeper=optuna_tpe",
    "data=dna",
    "model.hidden_sizes=[16]",
    "model.num_masks=1",
    "~callbacks.rich_progress_bar",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "logger=csv",
]
SPACE = {"optimizer.lr": FloatDistribution(1e-4, 3e-2, log=True)}


def tpe(**kwargs) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(n_startup_trials=10, constant_liar=True, **kwargs)


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


class FakeLauncher:
    """Stands in for a Hydra launcher: records the jobs and scores each by its lr; NaN (a failed run) for
    the job numbers in ``nan_jobs``."""

    def __init__(self, nan_jobs: tuple[int, ...] = ()):
        self.nan_jobs = nan_jobs
        self.jobs: list[tuple[int, list[str]]] = []

    def __call__(self, overrides: list[list[str]], first_job: int) -> list[JobReturn]:
        returns = []
        for num, job in enumerate(overrides, start=first_job):
            self.jobs.append((num, job))
            lr = float(dict(item.split("=", 1) for item in job)["optimizer.lr"])
            value = math.nan if num in self.nan_jobs else (math.log10(lr) + 2.5) ** 2
            returns.append(JobReturn(overrides=job, status=JobStatus.COMPLETED, _return_value=value))
        return returns


def test_hydra_discovers_the_sweeper_the_config_names():
    target = compose_train(["hydra/sweeper=optuna_tpe"]).hydra.sweeper._target_
    assert target in {f"{cls.__module__}.{cls.__name__}" for cls in Plugins.instance().discover(Sweeper)}


def test_search_space_reads_the_configs_params_and_the_command_line():
    params = compose_train(["hydra/sweeper=optuna_tpe"]).hydra.sweeper.params
    distributions, fixed = search_space(params, [])
    assert distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 3e-2, log=True),
        "model.hidden_sizes": CategoricalDistribution(["[250]", "[500]", "[1000]", "[500,500]"]),
        "model.num_masks": CategoricalDistribution(["1", "2", "4", "8", "16", "32"]),
    }
    assert fixed == []
    # the command line replaces a key of params: fixed, or swept otherwise
    distributions, fixed = search_space(
        params,
        ["model.num_masks=1", "model.hidden_sizes=range(100,501,200)", "+trainer.limit_train_batches=2", "data=dna"],
    )
    assert set(distributions) == {"optimizer.lr", "model.hidden_sizes"}
    assert distributions["model.hidden_sizes"] == IntDistribution(100, 500, step=200)
    assert fixed == ["model.num_masks=1", "+trainer.limit_train_batches=2", "data=dna"]


def test_search_space_refuses_a_sweep_it_cannot_search():
    with pytest.raises(ConfigError, match=r"data=glob\(\*\): cannot search over this"):
        search_space({}, ["data=glob(*)"])


def test_storage_defaults_to_sqlite_in_the_sweep_dir_and_takes_any_sqlalchemy_url():
    hydra_cfg = compose_train(["hydra/sweeper=optuna_tpe"]).hydra
    assert hydra_cfg.sweeper.storage == f"sqlite:///{hydra_cfg.sweep.dir}/optuna.db"
    url = "postgresql+psycopg://made@db.example.org/searches"  # as in the README
    assert compose_train(["hydra/sweeper=optuna_tpe", f"hydra.sweeper.storage={url}"]).hydra.sweeper.storage == url


def test_a_bad_storage_url_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"storage='not a url' is neither journal:<file> nor a SQLAlchemy URL"):
        open_study("s", "not a url", "minimize", tpe, seed=0)


def test_trial_counts_out_of_range_are_one_clear_error():
    with pytest.raises(ConfigError, match=r"hydra.sweeper.n_jobs=0: must be >= 1"):
        check_batches(4, 0)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.n_trials=-1: must be >= 0"):
        check_batches(-1, 1)


def test_a_batch_is_launched_in_runs_of_consecutive_trial_numbers():
    trials = [SimpleNamespace(number=number) for number in (4, 5, 7, 8, 9, 12)]  # 6, 10, 11: another worker's
    assert [[trial.number for trial in run] for run in _consecutive_runs(trials)] == [[4, 5], [7, 8, 9], [12]]


def test_rerunning_a_search_continues_the_study_up_to_n_trials_in_all(tmp_path):
    storage, launch = sqlite(tmp_path / "sweep" / "optuna.db"), FakeLauncher()
    run_search(open_study("s", storage, "minimize", tpe, seed=0), SPACE, ["data=dna"], 3, 2, launch)
    assert (tmp_path / "sweep" / "optuna.db").is_file()  # the SQLite file's directory was created
    run_search(open_study("s", storage, "minimize", tpe, seed=0), SPACE, ["data=dna"], 5, 2, launch)
    run_search(open_study("s", storage, "minimize", tpe, seed=0), SPACE, ["data=dna"], 5, 2, launch)  # done: no-op
    study = optuna.load_study(study_name="s", storage=storage)
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3, 4]
    assert [num for num, _ in launch.jobs] == [0, 1, 2, 3, 4]  # job number = trial number
    assert all(job[0] == "data=dna" for _, job in launch.jobs)
    lrs = [trial.params["optimizer.lr"] for trial in study.trials]
    assert len(set(lrs)) == 5  # the continued worker did not repeat the first run's proposals


def test_two_workers_on_one_study_propose_different_trials(tmp_path):
    storage = sqlite(tmp_path / "optuna.db")
    workers = [open_study("s", storage, "minimize", tpe, seed=None) for _ in range(2)]
    proposals = [workers[num % 2].ask(SPACE).params["optimizer.lr"] for num in range(8)]
    assert len(set(proposals)) == 8


def test_a_journal_file_holds_a_study_that_workers_continue(tmp_path):
    storage, launch = f"journal:{tmp_path / 'sub' / 'optuna.journal'}", FakeLauncher()
    workers = [open_study("s", storage, "minimize", tpe, seed=None) for _ in range(2)]
    proposals = [workers[num % 2].ask(SPACE).params["optimizer.lr"] for num in range(6)]
    assert len(set(proposals)) == 6 and (tmp_path / "sub" / "optuna.journal").is_file()
    run_search(open_study("s", storage, "minimize", tpe, seed=0), SPACE, [], 8, 2, launch)
    assert [num for num, _ in launch.jobs] == [6, 7]  # 6 trials were asked already, the study total is 8
    absolute = f"journal:///{tmp_path / 'sub' / 'optuna.journal'}"
    assert len(optuna.load_study(study_name="s", storage=study_storage(absolute)[0]).trials) == 8


def test_a_fixed_seed_reproduces_a_worker_on_a_fresh_study(tmp_path):
    def proposals(storage: str) -> list[float]:
        launch = FakeLauncher()
        run_search(open_study("s", storage, "minimize", tpe, seed=7), SPACE, [], 4, 1, launch)
        return [float(job[0].split("=")[1]) for _, job in launch.jobs]

    assert proposals(sqlite(tmp_path / "a.db")) == proposals(sqlite(tmp_path / "b.db"))


def test_a_failed_trial_is_recorded_failed_and_the_search_goes_on(tmp_path):
    storage = sqlite(tmp_path / "optuna.db")
    study = open_study("s", storage, "minimize", tpe, seed=0)

    def launch(overrides, first_job):
        returns = FakeLauncher(nan_jobs=(0,))(overrides, first_job)
        if first_job == 2:  # a job that raised outside made-train's own error handling
            returns = [JobReturn(overrides=overrides[0], status=JobStatus.FAILED, _return_value=RuntimeError("x"))]
        return returns

    run_search(study, SPACE, [], 4, 1, launch)
    assert [trial.state for trial in study.trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    write_best(study, tmp_path / "optimization_results.yaml")
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == study.best_value and best["best_trial"] in (1, 3)


def test_interrupted_trials_are_not_left_running(tmp_path):
    study = open_study("s", sqlite(tmp_path / "optuna.db"), "minimize", tpe, seed=0)

    def interrupted(overrides, first_job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(study, SPACE, [], 4, 2, interrupted)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_no_best_is_written_when_no_trial_finished(tmp_path):
    study = open_study("s", sqlite(tmp_path / "optuna.db"), "minimize", tpe, seed=0)
    run_search(study, SPACE, [], 2, 1, FakeLauncher(nan_jobs=(0, 1)))
    write_best(study, tmp_path / "optimization_results.yaml")
    assert not (tmp_path / "optimization_results.yaml").exists()


def made_train(args: list[str], log_dir: Path, wait: bool = True):
    env = {
        **os.environ,
        "MADE_LOG_DIR": str(log_dir),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
    }
    command = [str(BIN / "made-train"), *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def job_values(sweep_dir: Path) -> dict[int, float]:
    """Trial number -> val/best_nll of each finished job under ``sweep_dir``."""
    return {
        int(path.parent.name.split("_")[0]): json.loads(path.read_text())["metrics"]["val/best_nll"]
        for path in sweep_dir.glob("*/results.json")
    }


@pytest.mark.slow
@needs_data
def test_search_keeps_its_study_in_the_sweep_dir_and_a_rerun_continues_it(tmp_path):
    first = made_train([*TINY_SEARCH, "hydra.sweeper.n_trials=2"], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    rerun = made_train([*TINY_SEARCH, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    study = optuna.load_study(study_name="train", storage=sqlite(sweep / "optuna.db"))
    assert [(trial.number, trial.state) for trial in study.trials] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert job_values(sweep) == {trial.number: pytest.approx(trial.value) for trial in study.trials}
    lrs = [trial.params["optimizer.lr"] for trial in study.trials]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 3e-2 for lr in lrs)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(trial.value for trial in study.trials))


@pytest.fixture
def postgres_url(tmp_path):
    """A PostgreSQL server (pgserver's self-contained binaries) in tmp_path, stopped and deleted after;
    as root, pgserver runs it as a system user ``pgserver`` that it creates (PostgreSQL refuses root)."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver is not installed (pip install -e '.[dev]')")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    try:
        server = pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    except Exception as error:  # no binaries for this platform, no user to run it as, ...
        pytest.skip(f"PostgreSQL server did not start: {type(error).__name__}: {error}")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(tmp_path / "pg", ignore_errors=True)


@pytest.mark.slow
@needs_data
def test_two_workers_share_one_study_in_postgresql_without_proposing_a_trial_twice(tmp_path, postgres_url):
    two_workers_share_one_study(tmp_path, postgres_url)


@pytest.mark.slow
@needs_data
def test_two_workers_share_one_study_in_a_journal_file_without_proposing_a_trial_twice(tmp_path):
    two_workers_share_one_study(tmp_path, f"journal:{tmp_path / 'shared' / 'optuna.journal'}")


def two_workers_share_one_study(tmp_path: Path, storage: str) -> None:
    """Two made-train searches started at once on ``storage`` share its study: 6 trials or a few more, none
    proposed twice, each run by one worker as the job numbered like it."""
    args = [
        *TINY_SEARCH,
        f"hydra.sweeper.storage='{storage}'",  # quoted: a URL may hold "="
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=6",
    ]
    workers = [made_train(args, tmp_path / f"worker{num}", wait=False) for num in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    study = optuna.load_study(study_name="shared", storage=study_storage(storage)[0])
    trials = study.trials
    assert len(trials) >= 6  # two workers that both see 5 trials may each ask one more
    assert all(trial.state == TrialState.COMPLETE for trial in trials)
    assert [trial.number for trial in trials] == list(range(len(trials)))
    lrs = [trial.params["optimizer.lr"] for trial in trials]
    assert len(set(lrs)) == len(lrs)
    # every trial ran in one worker's sweep dir, as the job numbered like it, and each worker ran some
    per_worker = [job_values(only_sweep(tmp_path / f"worker{num}")) for num in range(2)]
    assert all(per_worker) and not set(per_worker[0]) & set(per_worker[1])
    assert {**per_worker[0], **per_worker[1]} == {trial.number: pytest.approx(trial.value) for trial in trials}


def only_sweep(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep
