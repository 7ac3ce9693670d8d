"""A user's install: the wheel in a fresh virtual environment, used from a directory that is not the checkout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data=synthetic",
    "data.num_train=200",
    "model.hidden_sizes=[16]",
    "trainer.max_epochs=1",
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
]


def run(command: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(bin dir of a fresh venv holding only the made_exp wheel, its environment). The dependencies come from
    this interpreter's site-packages through a .pth file (not its .pth files, so not an editable made_exp)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MADE_DATA_DIR")}
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ROOT],
        tmp,
        env,
    )
    run([sys.executable, "-m", "venv", tmp / "venv"], tmp, env)
    (site,) = (tmp / "venv" / "lib").glob("python*/site-packages")
    (site / "dependencies.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    (wheel,) = (tmp / "dist").glob("made_exp-*.whl")
    run(
        [tmp / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel],
        tmp,
        env,
    )
    return tmp / "venv" / "bin", {**env, "WANDB_MODE": "offline", "MADE_LOG_DIR": str(tmp / "logs")}


@pytest.mark.slow
def test_the_wheel_trains_and_evaluates_from_any_directory(installed, tmp_path):
    bin_dir, env = installed
    where = run(
        [bin_dir / "python", "-c", "import made_exp.runs.config as c; print(c.__file__, c.CONFIG_DIR)"], tmp_path, env
    ).stdout.split()
    assert all("site-packages" in path for path in where), where  # not the checkout
    run([bin_dir / "made-train", *TINY], tmp_path, env)
    (run_dir,) = (Path(env["MADE_LOG_DIR"]) / "train" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["git_commit"] == "unknown" and results["made_exp_version"] == "0.1.0"
    run([bin_dir / "made-eval", run_dir, "--ensemble", "poe"], tmp_path, env)
    assert "test/nll" in json.loads((run_dir / "eval_poe.json").read_text())["metrics"]


@pytest.mark.slow
def test_the_users_own_experiment_yaml_composes_with_the_shipped_configs(installed, tmp_path):
    bin_dir, env = installed
    experiments = tmp_path / "my_conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "mine.yaml").write_text("# @package _global_\nmodel:\n  hidden_sizes: [7]\n")
    run(
        [bin_dir / "made-train", "--config-dir", tmp_path / "my_conf", "experiment=mine", *TINY[:2], *TINY[3:]],
        tmp_path,
        env,
    )
    results = sorted((Path(env["MADE_LOG_DIR"]) / "train" / "runs").glob("*/results.json"))
    assert json.loads(results[-1].read_text())["config"]["model"]["hidden_sizes"] == [7]
