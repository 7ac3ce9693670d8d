"""A user's install: the wheel in a fresh virtual environment, used from a directory that is not the checkout."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import made_exp

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


def clean_env() -> dict:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MADE_DATA_DIR")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """made_exp's wheel, built from the checkout."""
    dist = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ROOT],
        dist,
        clean_env(),
    )
    (built,) = dist.glob("made_exp-*.whl")
    return built


def fresh_venv(where: Path, borrowed: list[Path]) -> tuple[Path, Path]:
    """(bin dir, site-packages) of a new venv that also sees the packages in ``borrowed``, in that order, through
    a .pth file (not their own .pth files, so not an editable made_exp)."""
    run([sys.executable, "-m", "venv", where], where.parent, clean_env())
    (site,) = (where / "lib").glob("python*/site-packages")
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    return where / "bin", site


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(bin dir of a fresh venv holding only the made_exp wheel, its environment). The dependencies come from
    this interpreter's site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = clean_env()
    bin_dir, _ = fresh_venv(tmp / "venv", [Path(torch.__file__).parents[1]])
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], tmp, env)
    return bin_dir, {**env, "WANDB_MODE": "offline", "MADE_LOG_DIR": str(tmp / "logs")}


def fake_distribution(site: Path, name: str, version: str, requires: list[str]) -> None:
    """The installed-package record of ``name`` at ``version`` in ``site`` (what pip reads; no code)."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.slow
def test_installing_the_wheel_keeps_the_torch_already_installed(wheel, tmp_path):
    """A researcher's own torch build (here a CUDA build of another version than the tested one) satisfies the
    wheel's dependencies: pip resolves every dependency from what is installed, offline, and changes none."""
    users = tmp_path / "users_packages"  # seen before this interpreter's packages, so its torch is the one pip finds
    fake_distribution(users, "torch", "2.6.0+cu124", [])
    fake_distribution(users, "torchvision", "0.21.0+cu124", ["torch ==2.6.0"])
    bin_dir, site = fresh_venv(tmp_path / "venv", [users, Path(torch.__file__).parents[1]])
    versions = (
        "import importlib.metadata as m; print(m.version('torch'), m.version('torchvision'), m.version('made_exp'))"
    )
    env = clean_env()

    run([bin_dir / "python", "-m", "pip", "install", "--no-index", wheel], tmp_path, env)  # offline: downloads nothing

    got = run([bin_dir / "python", "-c", versions], tmp_path, env).stdout.split()
    assert got == ["2.6.0+cu124", "0.21.0+cu124", made_exp.__version__]
    assert not list(site.glob("torch*")), "pip installed a torch of its own"


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
    assert results["git_commit"] == "unknown" and results["made_exp_version"] == made_exp.__version__
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


@pytest.mark.slow
def test_the_wheel_ships_its_type_hints_licence_and_version(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        fields = archive.read(metadata).decode()
    assert "made_exp/py.typed" in names and any(name.endswith("licenses/LICENSE") for name in names)
    assert f"\nVersion: {made_exp.__version__}\n" in fields and "\nLicense-Expression: MIT\n" in fields
    assert "Requires-Dist: torch<3,>=2.4" in fields  # a range: the user's torch stays
