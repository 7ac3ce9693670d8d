"""made_exp.runs.load_runs: every run under a directory as a DataFrame row, on real runs and the committed ones."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas
import pytest

from made_exp.cli.evaluate import main as made_eval
from made_exp.runs import load_runs
from made_exp.runs.config import CONFIG_DIR
from made_exp.runs.dataframe import config_columns
from made_exp.runs.records import ReportError
from made_exp.runs.rundir import RunDir

BIN = Path(sys.executable).parent
PAPER_RESULTS = Path(CONFIG_DIR).parent / "experiments" / "paper" / "results"
TINY = ["data=synthetic", "model.hidden_sizes=[8]", "trainer.max_epochs=2", "logger=csv", "module.num_samples=0"]


def made_train(*overrides: str, cwd: Path) -> None:
    env = {**os.environ, "MADE_LOG_DIR": str(cwd / "logs")}
    result = subprocess.run(
        [str(BIN / "made-train"), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """Real tiny runs of each kind: a single run (scored again by made-eval, twice), a sweep over seeds on the
    packed launcher, an Optuna search of two trials; and copies of the single run that failed and that stopped."""
    root = tmp_path_factory.mktemp("runs")
    made_train(*TINY, "hydra.run.dir=single", cwd=root)
    made_train("-m", *TINY, "hydra/launcher=packed", "seed=0,1", "hydra.sweep.dir=packed", cwd=root)
    made_train("-m", *TINY, "hydra/sweeper=optuna_tpe", "hydra.sweeper.n_trials=2", "hydra.sweep.dir=search", cwd=root)
    made_eval([str(root / "single"), "--ensemble", "mixture", "--accelerator", "cpu"])
    made_eval([str(root / "single"), "--ensemble", "poe", "--set", "log_z_method=exact", "--accelerator", "cpu"])
    for name in ("failed", "stopped"):
        shutil.copytree(root / "single", root / name)
        RunDir(root / name).results.unlink()
        for evaluation in RunDir(root / name).evaluations():
            evaluation.unlink()
    (root / "failed" / "error.json").write_text(json.dumps({"error": "RuntimeError: out of memory", "traceback": []}))
    return root


@pytest.mark.slow
def test_every_run_of_every_kind_is_a_row_with_its_config_metrics_and_records(runs_root):
    runs = load_runs(runs_root).set_index("run_dir")
    by_status = runs.groupby("status").size().to_dict()
    assert by_status == {"finished": 5, "failed": 1, "unfinished": 1}
    finished = runs[runs.status == "finished"]
    for run_dir, row in finished.iterrows():
        results = json.loads((Path(run_dir) / "results.json").read_text())
        assert row["test/nll"] == results["metrics"]["test/nll"]
        assert row["val/best_nll"] == results["metrics"]["val/best_nll"]
        assert (row["epochs"], row["stopped_by"], row["wall_time_s"]) == (2, "max_epochs", results["wall_time_s"])
        assert row["seed"] == results["config"]["seed"] and row["seeds.init"] == results["seeds"]["init"]
        assert row["data._target_"] == "made_exp.data.datamodules.SyntheticDataModule"
        assert row["model.hidden_sizes"] == tuple(results["config"]["model"]["hidden_sizes"])
    packed = finished.filter(like="packed", axis=0)
    assert sorted(packed["seed"]) == [0, 1] and sorted(packed["module.evaluation_seed"]) == [0, 1]
    search = finished.filter(like="search", axis=0)
    assert len(search) == 2 and search["optimizer.lr"].nunique() == 2  # the sampler's learning rates
    assert runs.loc[str(runs_root / "failed"), "error"] == "RuntimeError: out of memory"
    stopped = runs.loc[str(runs_root / "stopped")]
    assert stopped["optimizer.lr"] == finished.loc[str(runs_root / "single"), "optimizer.lr"]  # from .hydra/
    assert pandas.isna(stopped["test/nll"])


@pytest.mark.slow
def test_made_eval_results_beside_a_run_are_eval_columns(runs_root):
    single = load_runs(runs_root / "single").iloc[0]
    mixture = json.loads(RunDir(runs_root / "single").evaluation("mixture").read_text())
    poe = json.loads(RunDir(runs_root / "single").evaluation("poe", ["log_z_method=exact"]).read_text())
    assert single["eval/mixture/test/nll"] == mixture["metrics"]["test/nll"]
    assert single["eval/poe[log_z_method=exact]/test/nll"] == poe["metrics"]["test/nll"]
    assert single["eval/poe[log_z_method=exact]/test/ensemble/log_z"] == poe["metrics"]["test/ensemble/log_z"]


def test_the_committed_paper_runs_load_with_their_results():
    runs = load_runs(PAPER_RESULTS)
    results = sorted(PAPER_RESULTS.rglob("results.json"))
    assert list(runs.run_dir) == [str(path.parent) for path in results]
    assert set(runs.status) == {"finished"}
    for path, (_, row) in zip(results, runs.iterrows(), strict=True):
        recorded = json.loads(path.read_text())
        assert row["test/nll"] == recorded["metrics"]["test/nll"]
        assert row["data.name"] == recorded["config"]["data"]["name"]
        assert row["model.hidden_sizes"] == tuple(recorded["config"]["model"]["hidden_sizes"])
        assert row["trainer.max_epochs"] == recorded["config"]["trainer"]["max_epochs"]
    assert {"seed", "seeds.init", "optimizer.lr", "masks.schedule"} <= set(config_columns(runs))


def test_whole_numbers_stay_whole_where_some_runs_lack_the_key():
    runs = load_runs(PAPER_RESULTS)
    momentum_runs = runs["optimizer.momentum"].notna()
    assert 0 < momentum_runs.sum() < len(runs)  # SGD runs set it, Adam runs do not
    assert runs["model.num_masks"].dtype == "int64" and runs["ensemble.num_masks"].dtype == "Int64"


def write_results(run_dir: Path, nll: float, **config) -> None:
    run_dir.mkdir(parents=True)
    payload = {"metrics": {"test/nll": nll}, "config": {"seed": 0, **config}, "epochs": 3, "wall_time_s": 1.0}
    (run_dir / "results.json").write_text(json.dumps(payload))


def test_a_corrupt_results_json_is_a_named_row_and_a_warning(tmp_path):
    write_results(tmp_path / "good", 80.0, model={"num_masks": 2})
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "results.json").write_text('{"metrics": {"test/')
    with pytest.warns(UserWarning, match="cut/results.json: unreadable results.json"):
        runs = load_runs(tmp_path).set_index("run_dir")
    assert runs.loc[str(tmp_path / "cut"), "status"] == "corrupt"
    assert "unreadable results.json" in runs.loc[str(tmp_path / "cut"), "error"]
    assert runs.loc[str(tmp_path / "good"), "model.num_masks"] == 2


def test_lists_are_tuples_so_runs_group_by_them(tmp_path):
    for name, hidden, nll in [("a", [500], 80.0), ("b", [500], 82.0), ("c", [500, 500], 79.0)]:
        write_results(tmp_path / name, nll, model={"hidden_sizes": hidden})
    means = load_runs(tmp_path).groupby("model.hidden_sizes")["test/nll"].mean()
    assert means.to_dict() == {(500,): 81.0, (500, 500): 79.0}


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_a_dir_without_runs_is_one_error_naming_it(tmp_path, make):
    if make == "empty":
        (tmp_path / "runs").mkdir()
    with pytest.raises(ReportError, match=f"no made-train run under {tmp_path / 'runs'}"):
        load_runs(tmp_path / "runs")
