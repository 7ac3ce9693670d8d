"""Bad input gets one clear line and exit status 2, nothing half-written; numbers are reproducible."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pytorch_lightning.loggers import WandbLogger

from conftest import compose_train
from made_exp.core.made import MADE
from made_exp.data.files import DATASETS, DataError, load_npz_splits
from made_exp.lightning import training as train_module
from made_exp.lightning.training import record_best_validation
from made_exp.runs.atomic import write_json_atomic

BIN = Path(sys.executable).parent
DATA_DIR = os.environ.get("MADE_DATA_DIR")
TINY = [
    "model.hidden_sizes=[16]",
    "trainer.max_epochs=2",
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
]


def cli(program: str, args: list[str], log_dir: Path, cwd: Path | None = None, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MADE_LOG_DIR": str(log_dir), "WANDB_MODE": "offline", **env}
    return subprocess.run(
        [str(BIN / program), *args], env=environment, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "Error executing job" not in result.stderr  # Hydra's own line for a failed job: ours is the one
    for fragment in fragments:
        assert fragment in errors[0]


def run_dirs(log_dir: Path) -> list[Path]:
    runs = log_dir / "train" / "runs"
    return list(runs.iterdir()) if runs.is_dir() else []


def write_npz(path: Path, **arrays) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


def valid_arrays(info, rows=None) -> dict:
    rows = rows or {"train": info.num_train, "valid": info.num_valid, "test": info.num_test}
    generator = np.random.default_rng(0)
    arrays = {
        f"{split}_data": (generator.random((n, info.input_dim)) < 0.5).astype(np.float32) for split, n in rows.items()
    }
    arrays.update({f"{split}_length": np.int32(n) for split, n in rows.items()})
    arrays["inputsize"] = np.int32(info.input_dim)
    return arrays


@pytest.mark.slow
def test_invalid_config_value_fails_before_anything_is_written(tmp_path):
    result = cli("made-train", ["data=dna", "model.activation=gelu"], tmp_path)
    assert_one_line_error(result, "model.activation", "relu, tanh, sigmoid")
    assert run_dirs(tmp_path) == []


@pytest.mark.slow
def test_unknown_key_fails_at_composition(tmp_path):
    """Hydra rejects it (exit 1, its own message); wrong types and unknown options: tests/test_config.py."""
    result = cli("made-train", ["model.hiden_sizes=[10]"], tmp_path)
    assert result.returncode != 0 and "hiden_sizes" in result.stderr and run_dirs(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["truncated", "values", "missing"])
def test_bad_data_file_is_named_and_nothing_is_written(tmp_path, problem):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    arrays = valid_arrays(DATASETS["dna"])
    if problem == "values":
        arrays["train_data"][3, 7] = 2.0
    if problem != "missing":
        path = write_npz(data_dir / "dna.npz", **arrays)
        if problem == "truncated":
            path.write_bytes(path.read_bytes()[:5000])
    result = cli(
        "made-train", ["data=dna", "data.download=false", *TINY], tmp_path / "logs", MADE_DATA_DIR=str(data_dir)
    )
    assert_one_line_error(result, "dna.npz")
    assert run_dirs(tmp_path / "logs") == []


@pytest.mark.slow
def test_eval_on_something_that_is_not_a_run(tmp_path):
    assert_one_line_error(cli("made-eval", [str(tmp_path)], tmp_path), str(tmp_path), "made-train run dir")


@pytest.mark.slow
def test_eval_unknown_ensemble_names_the_choices(tmp_path):
    result = cli("made-eval", [str(tmp_path), "--ensemble", "median"], tmp_path)
    assert_one_line_error(result, "median", "mixture")


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(0, 6), st.integers(0, 6)),
        elements=st.sampled_from([0.0, 1.0, 0.5, 2.0, -1.0, float("nan"), float("inf")]),
    ),
    st.sampled_from(["train_data", "valid_data", "test_data", "inputsize", "train_length"]),
)
@example(bad=np.array([[np.nan]]), key="inputsize")  # once found at random: int(nan) raised ValueError
@example(bad=np.array([[2.5]]), key="train_length")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_loader_rejects_any_malformed_array_with_a_data_error(tmp_path, bad, key):
    """Whatever replaces one array of a small valid file, loading either succeeds or raises DataError."""
    info = DATASETS["dna"].__class__("fuzz", 5, 4, 3, 2, url="http://127.0.0.1:9/fuzz.npz")
    arrays = valid_arrays(info)
    arrays[key] = bad
    path = write_npz(tmp_path / "fuzz.npz", **arrays)
    try:
        splits = load_npz_splits(path, info)
    except DataError as error:
        assert str(path) in str(error)
    else:  # accepted only if the replacement was itself valid
        assert all(((t == 0) | (t == 1)).all() for t in splits.values())


@given(st.binary(min_size=0, max_size=300))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_loader_rejects_arbitrary_bytes(tmp_path, garbage):
    path = tmp_path / "garbage.npz"
    path.write_bytes(garbage)
    with pytest.raises(DataError, match="garbage.npz"):
        load_npz_splits(path, DATASETS["dna"])


def test_nll_reduction_stays_fp32_under_bf16_autocast():
    model = MADE(20, [64], num_masks=1)
    x = torch.bernoulli(torch.full((32, 20), 0.5))
    exact = model.log_prob(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = model.log_prob(x)
    assert low_precision.dtype == torch.float32
    assert torch.allclose(low_precision, exact, atol=0.5)


def test_atomic_json_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"test/nll": 1.0})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"test/nll": object()})
    assert json.loads(path.read_text()) == {"test/nll": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.slow
@pytest.mark.skipif(DATA_DIR is None, reason="set MADE_DATA_DIR to the paper's data")
def test_same_seed_deterministic_runs_give_bitwise_identical_metrics(tmp_path):
    metrics = []
    for attempt in ("a", "b"):
        result = cli(
            "made-train",
            [
                "data=dna",
                "masks=fresh",
                "ensemble.num_masks=20",
                "masks.val_num_masks=4",
                "trainer.deterministic=true",
                "seed=7",
                *TINY,
            ],
            tmp_path / attempt,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (run,) = run_dirs(tmp_path / attempt)
        metrics.append(json.loads((run / "results.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]


def test_a_run_without_the_wandb_logger_never_needs_wandb(monkeypatch):
    from made_exp.lightning.training import _finish_wandb

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    _finish_wandb()


def test_results_record_the_commit_taken_before_training(tmp_path, monkeypatch):
    """The checkout can move on while a run trains: results.json keeps the commit of the code that started."""
    import pytorch_lightning as pl

    fitting = {"started": False}
    fit = pl.Trainer.fit

    def marked_fit(self, *args, **kwargs):
        fitting["started"] = True
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", marked_fit)
    monkeypatch.setattr(train_module, "git_commit", lambda: "after-fit" if fitting["started"] else "before-fit")
    cfg = compose_train(
        [
            "data=synthetic",
            "model.hidden_sizes=[8]",
            "trainer=debug",
            "trainer.max_epochs=1",
            "logger=none",
            "module.num_samples=0",
            "callbacks=none",
            f"paths.output_dir={tmp_path}",
        ],
        with_hydra=False,
    )
    results = train_module.train(cfg)
    assert fitting["started"] and results["git_commit"] == "before-fit"


def test_last_checkpoint_is_the_latest_epoch_and_best_the_best_one(tmp_path):
    """resume= continues from last.ckpt: it must hold the latest epoch even when val/nll stopped improving."""
    cfg = compose_train(
        [
            "data=synthetic",
            "data.num_train=100",
            "model.hidden_sizes=[256]",
            "optimizer.lr=0.05",  # overfits
            "trainer.max_epochs=8",
            "logger=csv",
            "module.num_samples=0",
            "~callbacks.rich_progress_bar",
            f"paths.output_dir={tmp_path}",
        ],
        with_hydra=False,
    )
    train_module.train(cfg)
    epochs = {
        name: torch.load(tmp_path / "checkpoints" / f"{name}.ckpt", weights_only=False)["epoch"]
        for name in ("best", "last")
    }
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as metrics:
        val_nll = {int(row["epoch"]): float(row["val/nll"]) for row in csv.DictReader(metrics) if row["val/nll"]}
    assert epochs["last"] == 7
    assert epochs["best"] == min(val_nll, key=val_nll.get) < 7  # the two differ: the test can tell them apart


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_a_non_zero_status(tmp_path):
    result = cli("made-train", ["data=synthetic", "optimizer.lr=1e6", *TINY], tmp_path)
    assert_one_line_error(result, "training diverged", "optimizer.lr")
    assert not list(tmp_path.glob("train/runs/*/results.json"))


@pytest.mark.slow
def test_a_run_off_a_terminal_logs_one_line_per_epoch_to_its_train_log(tmp_path):
    overfits = [
        "data=synthetic",
        "data.num_train=100",
        "model.hidden_sizes=[256]",
        "optimizer.lr=0.05",
        "trainer.max_epochs=30",
        "callbacks.early_stopping.patience=1",
        "logger=csv",
        "module.num_samples=0",
    ]
    result = cli("made-train", overfits, tmp_path)  # stdout is a pipe: no terminal
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    log = (run_dir / "train.log").read_text()
    epochs = [line for line in log.splitlines() if "[made_exp][INFO] - epoch " in line]
    assert epochs and all(" train " in line and " val " in line and line.endswith(" s") for line in epochs)
    assert f"run dir: {run_dir}" in log and f"results: {run_dir / 'results.json'}" in log
    assert "early stopping after epoch" in log and "test/nll" in log
    assert "Tip:" not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr  # no bar
    assert "Warning" not in result.stderr


def test_the_wandb_summary_holds_the_best_validation_not_the_last():
    logger = WandbLogger.__new__(WandbLogger)
    logger._experiment = SimpleNamespace(summary={"val/nll": 9.0})  # what W&B keeps: the last epoch's
    record_best_validation([logger], {"val/best_nll": 7.5})
    assert logger._experiment.summary == {"val/nll": 7.5, "val/best_nll": 7.5}


@pytest.mark.slow
def test_a_bank_too_large_for_memory_is_refused_before_any_work(tmp_path):
    result = cli("made-train", ["data=synthetic", "model.num_masks=1000000000", *TINY], tmp_path)
    assert_one_line_error(result, "model.num_masks=1000000000", "GiB")
    assert run_dirs(tmp_path) == []


def test_the_commit_is_read_once_per_process_as_the_code_is(monkeypatch):
    """A sweep's jobs run the code its process loaded: a checkout that moves on later is not credited."""
    from made_exp.runs import provenance

    provenance.git_commit.cache_clear()
    first = provenance.git_commit()
    monkeypatch.setattr(provenance.subprocess, "run", lambda *args, **kwargs: (_ for _ in ()).throw(OSError()))
    assert provenance.git_commit() == first  # git is not asked again
    provenance.git_commit.cache_clear()
    assert provenance.git_commit() == "unknown"  # asked again, it would have answered something else
    provenance.git_commit.cache_clear()
