"""Pruning a search's trials (hydra.sweeper.pruner, made_exp.runs.pruning, made_exp.lightning.pruning): the pruner
options, the callback reporting val/nll and stopping a pruned trial, the sweeper telling it PRUNED, the sweep summary;
end to end through made-train under the basic, parallel and local_queue launchers (SLURM: tests/test_slurm.py), a
rerun, and the packed launcher's refusal. The pruner decision is deterministic: a ThresholdPruner that every val/nll
crosses prunes every trial at its first epoch."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import pytorch_lightning as pl
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import compose_train
from made_exp.lightning.pruning import TrialPruning, check_single_process
from made_exp.runs.config import ConfigError
from made_exp.runs.pruning import check_launcher, choose_pruner, open_trial
from made_exp.runs.search import open_study, run_search
from made_exp.runs.sweep import SweepSummary
from test_search import SPACE, TINY_SEARCH, made_train, needs_data, sqlite, tpe

ALWAYS = "+hydra.sweeper.pruners.always={_target_:optuna.pruners.ThresholdPruner,upper:0.0}"  # val/nll > 0: pruned


def test_the_pruner_is_none_by_default_and_each_option_is_optunas_pruner():
    sweeper = compose_train(["hydra/sweeper=optuna_tpe"]).hydra.sweeper
    assert sweeper.pruner == "none"
    assert isinstance(choose_pruner(sweeper.pruner, {}), optuna.pruners.NopPruner)
    pruners = {name: instantiate(node) for name, node in sweeper.pruners.items()}
    assert {name: type(pruner) for name, pruner in pruners.items()} == {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    assert choose_pruner("hyperband", pruners) is pruners["hyperband"]


def test_an_unknown_pruner_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.pruner=mean: no such pruner; choose one of none, median$"):
        choose_pruner("mean", {"median": optuna.pruners.MedianPruner()})


def test_the_packed_launcher_refuses_a_pruner():
    packed = "hydra_plugins.made_packed_launcher.made_packed_launcher.PackedLauncher"
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner=median does not work with hydra/launcher=packed"):
        check_launcher("median", packed)
    check_launcher("none", packed)
    check_launcher("median", "hydra._internal.core_plugins.basic_launcher.BasicLauncher")


def validation_end(callback: TrialPruning, value: float, epoch: int) -> SimpleNamespace:
    """A trainer after validating ``epoch`` with val/nll ``value``, passed to ``callback``."""
    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=epoch, should_stop=False, callback_metrics={"val/nll": torch.tensor(value)}
    )
    callback.on_validation_end(trainer, None)
    return trainer


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_callback_reports_each_epoch_to_its_trial_and_stops_when_pruned(tmp_path, kind):
    storage = sqlite(tmp_path / "optuna.db") if kind == "sqlite" else f"journal:{tmp_path / 'optuna.journal'}"
    study = open_study("s", storage, "minimize", tpe, seed=0)
    study.ask(SPACE)
    callback = TrialPruning(open_trial("s", storage, optuna.pruners.ThresholdPruner(upper=90.0), 0))
    assert not validation_end(callback, 85.0, 0).should_stop and not callback.pruned
    assert validation_end(callback, 95.0, 1).should_stop and callback.pruned
    assert study.trials[0].intermediate_values == {0: 85.0, 1: 95.0}


def test_a_trial_finished_in_the_study_is_not_reported_to_again(tmp_path):
    """A rerun job of a trial the study holds as told already (pruned, failed): it trains on, unreported."""
    storage = sqlite(tmp_path / "optuna.db")
    study = open_study("s", storage, "minimize", tpe, seed=0)
    study.tell(study.ask(SPACE), state=TrialState.PRUNED)
    callback = TrialPruning(open_trial("s", storage, optuna.pruners.ThresholdPruner(upper=0.0), 0))
    assert not validation_end(callback, 95.0, 0).should_stop and not callback.pruned
    assert not validation_end(callback, 95.0, 1).should_stop
    assert study.trials[0].state == TrialState.PRUNED and study.trials[0].intermediate_values == {}


def test_a_trial_of_several_processes_is_refused_before_fit(tmp_path):
    callback = TrialPruning(trial=None)
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback], logger=False)
    with pytest.raises(ConfigError, match=r"prunes trials of one process, not this one of 2 \(DDP\)"):
        check_single_process(ddp)
    check_single_process(pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False))
    check_single_process(pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False))  # no pruner


def test_a_job_whose_results_say_pruned_is_told_pruned(tmp_path):
    def launch(overrides, first_job):
        returns = []
        for num, job in enumerate(overrides, start=first_job):
            (tmp_path / str(num)).mkdir()
            stopped_by = "pruned" if num == 0 else "early_stopping"
            (tmp_path / str(num) / "results.json").write_text(json.dumps({"stopped_by": stopped_by}))
            returns.append(JobReturn(overrides=job, status=JobStatus.COMPLETED, _return_value=90.0 + num))
            returns[-1].hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / str(num))}}})
        return returns

    study = open_study("s", sqlite(tmp_path / "optuna.db"), "minimize", tpe, seed=0)
    run_search(study, SPACE, [], 2, 2, launch)
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert study.best_trial.number == 1


def test_the_sweep_summary_counts_a_pruned_job_and_does_not_fail_the_sweep(tmp_path):
    for num, stopped_by in enumerate(["pruned", "early_stopping"]):
        job = tmp_path / f"{num}_seed={num}"
        hydra = {"hydra": {"job": {"num": num}, "overrides": {"task": [f"seed={num}"]}}}
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(hydra), job / ".hydra" / "hydra.yaml")
        results = {"metrics": {"val/best_nll": 90.0}, "stopped_by": stopped_by}
        (job / "results.json").write_text(json.dumps(results))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))  # no exit
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert [row["status"] for row in summary["jobs"]] == ["pruned", "finished"]
    assert (summary["finished"], summary["pruned"]) == (1, 1)
    assert "| 0 | pruned | seed=0 |" in (tmp_path / "sweep_summary.md").read_text()


def results(sweep: Path) -> dict[int, dict]:
    return {int(path.parent.name.split("_")[0]): json.loads(path.read_text()) for path in sweep.glob("*/results.json")}


def pruned_search(tmp_path: Path, launcher: str) -> tuple[Path, list[str]]:
    """A search of 2 trials (3 epochs at most) that a pruner stops after their first epoch; its sweep dir and the
    command line without the pruner."""
    sweep = tmp_path / "sweep"
    args = [*TINY_SEARCH, "trainer.max_epochs=3", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}"]
    first = made_train([*args, ALWAYS, "hydra.sweeper.pruner=always", "hydra.sweeper.n_trials=2"], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return sweep, args


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("launcher", ["basic", "parallel", "local_queue"])
def test_pruned_trials_stop_keep_their_run_and_are_pruned_in_the_study_and_summary(tmp_path, launcher):
    sweep, _ = pruned_search(tmp_path, launcher)
    study = optuna.load_study(study_name="train", storage=sqlite(sweep / "optuna.db"))
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED] * 2
    runs = results(sweep)
    assert {num: (run["stopped_by"], run["epochs"]) for num, run in runs.items()} == {n: ("pruned", 1) for n in (0, 1)}
    for trial in study.trials:  # epoch 0 was reported, then the trial stopped; it was still tested
        assert trial.intermediate_values == {0: pytest.approx(runs[trial.number]["metrics"]["val/best_nll"])}
        assert math.isfinite(runs[trial.number]["metrics"]["test/nll"])
    assert all((job / "checkpoints" / "last.ckpt").is_file() for job in sweep.iterdir() if (job / ".hydra").is_dir())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["pruned"], summary["finished"], summary["failed"]) == (2, 0, 0)


@pytest.mark.slow
@needs_data
def test_a_rerun_continues_a_study_with_pruned_trials_and_leaves_them_pruned(tmp_path):
    sweep, args = pruned_search(tmp_path, "basic")
    before = {path: path.stat().st_mtime_ns for path in sweep.glob("*/results.json")}
    # the median pruner prunes nothing before 5 trials completed: the new trial trains to max_epochs
    rerun = made_train([*args, "hydra.sweeper.pruner=median", "hydra.sweeper.n_trials=3"], tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    study = optuna.load_study(study_name="train", storage=sqlite(sweep / "optuna.db"))
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED] * 2 + [TrialState.COMPLETE]
    assert [len(trial.intermediate_values) for trial in study.trials] == [1, 1, 3]
    assert (results(sweep)[2]["stopped_by"], results(sweep)[2]["epochs"]) == ("max_epochs", 3)
    assert {path: path.stat().st_mtime_ns for path in before} == before  # the pruned runs were left as they were
    assert json.loads((sweep / "sweep_summary.json").read_text())["pruned"] == 2


@pytest.mark.slow
def test_the_packed_launcher_refuses_a_pruner_in_one_line_before_any_work(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*TINY_SEARCH, "hydra/launcher=packed", "hydra.sweeper.pruner=median", f"hydra.sweep.dir={sweep}"]
    result = made_train(args, tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "hydra.sweeper.pruner=median does not work with hydra/launcher=packed" in line
    assert not sweep.exists()
