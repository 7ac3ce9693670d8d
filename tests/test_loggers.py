"""logger=tensorboard and logger=mlflow: what each wrote, read back with that tool's own reader, and a resumed run
continuing its TensorBoard and MLflow run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_train

BIN = Path(sys.executable).parent
TINY = [
    "data=synthetic",
    "model.hidden_sizes=[16]",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
    "callbacks.early_stopping.patience=100",
]


def made_train(args: list[str], log_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MADE_LOG_DIR": str(log_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "made-train"), *args]
    return subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("choice", ["tensorboard", "mlflow", "[csv,tensorboard]", "[csv,mlflow]"])
def test_each_logger_composes_alone_or_beside_csv(choice):
    loggers = compose_train([f"logger={choice}"]).logger
    assert set(loggers) == set(choice.strip("[]").split(","))


def val_nll_tensorboard(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("val/nll")]


def val_nll_mlflow(log_dir: Path) -> tuple[list, list[tuple[int, float]]]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{log_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["made_exp"], output_format="list")
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "val/nll")
    return runs, sorted((metric.step, metric.value) for metric in history)


@pytest.mark.slow
def test_a_resumed_run_continues_its_tensorboard_and_mlflow_runs(tmp_path):
    logs, run_dir, elsewhere = tmp_path / "logs", tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    loggers = "logger=[csv,tensorboard,mlflow]"
    first = made_train([*TINY, loggers, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"], logs, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(val_nll_tensorboard(run_dir)) == 2
    # resumed from another directory: the MLflow store is the one the run started in
    resumed = made_train([f"resume={run_dir}", "trainer.max_epochs=4", "overwrite=true"], Path("logs"), elsewhere)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    csv_rows = (run_dir / "csv").glob("version_*/metrics.csv")
    csv_val = [line for path in csv_rows for line in path.read_text().splitlines()[1:] if line.split(",")[-1]]
    tensorboard = val_nll_tensorboard(run_dir)
    assert len(tensorboard) == 4 and [step for step, _ in tensorboard] == sorted({step for step, _ in tensorboard})
    runs, mlflow_history = val_nll_mlflow(logs)
    assert len(runs) == 1 and runs[0].info.run_id == json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    assert [step for step, _ in mlflow_history] == [step for step, _ in tensorboard]
    assert [value for _, value in mlflow_history] == pytest.approx([value for _, value in tensorboard], rel=1e-6)
    assert csv_val  # the CSV log beside them
    assert not (elsewhere / "logs").exists()
