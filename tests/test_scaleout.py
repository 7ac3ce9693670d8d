"""Sweeps, clusters, DDP and resume: launcher/sweeper configs, the SLURM script, multiruns through
the real CLI (joblib, a failing job; Optuna's in test_search.py), DDP on CPU (gloo) and kill-and-resume."""

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import submitit
import yaml
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.runs.sweep import SweepSummary, run_job, write_sweep_summary

BIN = Path(sys.executable).parent
DATA_DIR = os.environ.get("MADE_DATA_DIR")
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="set MADE_DATA_DIR to the paper's data (../shared/data)")
# Tiny and quick on dna (14 batches of 100 per epoch); no progress bar in captured output.
TINY = ["data=dna", "model.hidden_sizes=[16]", "~callbacks.rich_progress_bar", "trainer.max_epochs=2"]


class KillAfterSteps(pl.Callback):
    """SIGKILL this process once ``steps`` optimiser steps are done: a crash with no chance to clean up."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


def made_train(
    args: list[str], log_dir: Path, timeout: int = 300, wait: bool = True, env: dict[str, str | None] | None = None
):
    """``made-train args`` with one torch thread and logs under ``log_dir``; ``env`` adds to (None: removes
    from) its environment."""
    env = {
        **os.environ,
        "MADE_LOG_DIR": str(log_dir),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    env = {name: value for name, value in env.items() if value is not None}
    command = [str(BIN / "made-train"), *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def only(paths) -> Path:
    (path,) = paths
    return path


@pytest.mark.parametrize("launcher", ["parallel", "local_queue", "slurm"])
def test_launcher_configs_compose(launcher):
    cfg = compose_train([f"hydra/launcher={launcher}"])
    assert "Launcher" in cfg.hydra.launcher._target_


def test_optuna_sweeper_searches_lr_width_and_masks_with_a_seed_per_worker():
    sweeper = compose_train(["hydra/sweeper=optuna_tpe"]).hydra.sweeper
    assert sweeper._target_.startswith("hydra_plugins.") and sweeper.direction == "minimize"
    assert sweeper.sampler._target_.endswith("TPESampler") and sweeper.sampler._partial_
    assert sweeper.seed is None  # each worker draws its own (made_exp.runs.search.sampler_seed)
    assert set(sweeper.params) == {"optimizer.lr", "model.hidden_sizes", "model.num_masks"}


def sbatch_script(overrides: list[str], tmp_path: Path, monkeypatch) -> str:
    """The sbatch script hydra-submitit-launcher would submit, rendered by submitit without SLURM."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    launcher = OmegaConf.to_container(compose_train(["hydra/launcher=slurm", *overrides]).hydra.launcher)
    executor = submitit.AutoExecutor(
        folder=tmp_path, cluster="slurm", slurm_max_num_timeout=launcher["max_num_timeout"]
    )
    # as SlurmLauncher.launch does: shared keys keep their name, SLURM-only ones get the slurm_ prefix
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    init_only = {"_target_", "submitit_folder", "max_num_timeout"}
    params = {key: value for key, value in launcher.items() if key not in init_only}
    executor.update_parameters(**{key if key in shared else f"slurm_{key}": value for key, value in params.items()})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")


def test_slurm_launcher_renders_a_multi_node_multi_gpu_sbatch_script(tmp_path, monkeypatch):
    script = sbatch_script(
        [
            "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.tasks_per_node=4",
            "hydra.launcher.timeout_min=90",
            "hydra.launcher.mem_gb=64",
        ],
        tmp_path,
        monkeypatch,
    )
    assert "#SBATCH --partition=gpu" in script
    assert "#SBATCH --nodes=2" in script
    assert "#SBATCH --gpus-per-node=4" in script
    assert "#SBATCH --ntasks-per-node=4" in script  # one task per GPU: srun starts the DDP ranks
    assert "#SBATCH --time=90" in script
    assert "#SBATCH --mem=64GB" in script
    assert "#SBATCH --signal=USR2@120" in script  # requeued on preemption or time limit (max_num_timeout)
    assert "srun" in script


def fake_sweep(sweep: Path, statuses: list[str]) -> None:
    """Job dirs ``<num>_seed=<num>`` under ``sweep`` as a multirun leaves them, one per status."""
    for num, status in enumerate(statuses):
        job = sweep / f"{num}_seed={num}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"job": {"num": num}, "overrides": {"task": [f"seed={num}"]}}})
        )
        if status == "finished":
            (job / "results.json").write_text(json.dumps({"metrics": {"val/best_nll": 90.0, "test/nll": 91.5}}))
        if status == "failed":
            (job / "error.json").write_text(json.dumps({"error": "ConfigError: model.num_masks=0 must be >= 1"}))


def test_sweep_summary_reports_finished_failed_and_incomplete_jobs(tmp_path):
    fake_sweep(tmp_path, ["finished", "failed", "incomplete"])
    jobs = write_sweep_summary(tmp_path)
    assert [row["status"] for row in jobs] == ["finished", "failed", "incomplete"]
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["failed"], summary["incomplete"]) == (1, 1, 1)
    assert jobs[0]["metrics"] == {"val/best_nll": 90.0, "test/nll": 91.5}
    markdown = (tmp_path / "sweep_summary.md").read_text()
    assert "| 1 | failed | seed=1 |" in markdown and "must be >= 1" in markdown


@pytest.mark.parametrize("statuses", [["finished", "failed"], ["incomplete", "finished"]])
def test_sweep_with_a_failed_or_incomplete_job_exits_non_zero_after_the_summary(tmp_path, statuses, caplog):
    fake_sweep(tmp_path, statuses)
    with pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exit_info.value.code == 1
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["finished"] == 1
    assert "1 of 2 jobs did not finish" in caplog.text


def exits(code: int):
    def train(cfg, resume_from=None):
        sys.exit(code)

    return train


def test_job_stopped_by_sigterm_is_left_incomplete_and_an_interrupt_stops_the_sweep(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    assert math.isnan(run_job(exits(143), cfg))  # made-train's exit on SIGTERM (scancel)
    assert not (tmp_path / "error.json").exists()
    with pytest.raises(SystemExit):
        run_job(exits(130), cfg)  # Ctrl-C


def test_sweep_whose_jobs_all_finished_exits_normally(tmp_path):
    fake_sweep(tmp_path, ["finished", "finished"])
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["finished"] == 2


def sweep_dir(log_dir: Path) -> Path:
    return only((log_dir / "train" / "multiruns").iterdir())


def job_dirs(sweep: Path) -> list[Path]:
    jobs = (path for path in sweep.iterdir() if (path / ".hydra").is_dir())
    return sorted(jobs, key=lambda path: int(path.name.split("_")[0]))


@pytest.mark.slow
@needs_data
def test_parallel_sweep_gives_one_result_and_one_wandb_run_per_job(tmp_path):
    result = made_train(["-m", "hydra/launcher=parallel", *TINY, "trainer.max_epochs=1", "seed=0,1"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all((job / "results.json").is_file() for job in jobs)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["finished"] == 2 and (sweep / "sweep_summary.md").is_file()
    run_ids = set()
    for job in jobs:
        run_id = (job / "wandb_id.txt").read_text().strip()
        wandb_log = only((job / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")).read_bytes()
        # the run's group is the sweep's name (elsewhere the name only appears inside paths)
        assert re.search(re.escape(sweep.name).encode() + rb"[^/]", wandb_log)
        run_ids.add(run_id)
    assert len(run_ids) == 2


@pytest.mark.slow
@needs_data
def test_failed_job_is_recorded_and_a_rerun_skips_finished_jobs(tmp_path):
    args = ["-m", *TINY, "trainer.max_epochs=1", "logger=csv", "model.num_masks=0,1"]
    result = made_train(args, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # the other job still ran
    sweep = sweep_dir(tmp_path)
    failed, finished = job_dirs(sweep)
    assert "model.num_masks=0" in (failed / "error.json").read_text()
    assert not (failed / "results.json").exists() and (finished / "results.json").is_file()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["failed"]) == (1, 1)
    assert "ConfigError" in summary["jobs"][0]["error"]

    finished_at = (finished / "results.json").stat().st_mtime_ns
    rerun = made_train([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert rerun.returncode == 1, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert (finished / "results.json").stat().st_mtime_ns == finished_at  # skipped, not retrained
    assert not list(finished.glob("csv/version_1"))
    assert json.loads((sweep / "sweep_summary.json").read_text())["failed"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_a_rerun_sweep_with_overwrite_trains_its_finished_jobs_on(tmp_path, launcher):
    """A finished sweep rerun with a larger trainer.max_epochs skips its jobs; with overwrite=true each goes on from
    its last.ckpt to what a sweep with that max_epochs trains."""
    args = [
        "-m",
        f"hydra/launcher={launcher}",
        "data=synthetic",
        "data.input_dim=12",
        "data.num_train=500",
        "model.hidden_sizes=[16]",
        "logger=csv",
        "module.num_samples=0",
        "~callbacks.rich_progress_bar",
        "callbacks.early_stopping.patience=100",
        "seed=0",
        "hydra.sweep.subdir=0",
    ]
    runs = {}
    sweeps = [("whole", 4, []), ("capped", 2, []), ("capped", 4, []), ("capped", 4, ["overwrite=true"])]
    for name, epochs, extra in sweeps:
        swept = made_train(
            [*args, f"trainer.max_epochs={epochs}", *extra, f"hydra.sweep.dir={tmp_path / name}"], tmp_path
        )
        assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
        runs.setdefault(name, []).append(json.loads((tmp_path / name / "0" / "results.json").read_text()))
    assert [results["epochs"] for results in runs["capped"]] == [2, 2, 4]  # skipped without overwrite=true
    previous = json.loads((tmp_path / "capped" / "0" / "results.previous.json").read_text())
    assert previous["epochs"] == 2  # reopened: the earlier results kept beside the new ones
    (whole,), on = runs["whole"], runs["capped"][-1]
    assert on["metrics"]["test/nll"] == pytest.approx(whole["metrics"]["test/nll"], abs=1e-6)
    assert on["per_mask_nll"] == pytest.approx(whole["per_mask_nll"], abs=1e-6)


@pytest.mark.slow
@needs_data
def test_ddp_in_a_multirun_shares_the_job_dir_and_matches_single_process_evaluation(tmp_path):
    # inside a multirun, the harder case: rank 1 must rerun this job, not the sweep
    result = made_train(["-m", *TINY, "trainer=ddp", "trainer.devices=2", "logger=csv"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "train" / "runs").exists()
    run_dir = only(job_dirs(sweep_dir(tmp_path)))  # rank 1 joined rank 0's job dir
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert only((run_dir / "checkpoints").glob("best*.ckpt")).name == "best.ckpt"
    ddp_nll = json.loads((run_dir / "results.json").read_text())["metrics"]["test/nll"]

    evaluation = subprocess.run(
        [str(BIN / "made-eval"), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    single_nll = json.loads((run_dir / "eval_mixture.json").read_text())["metrics"]["test/nll"]
    # every test example scored once over the two ranks: the same mean as one process
    assert ddp_nll == pytest.approx(single_nll, rel=1e-9)


@pytest.mark.slow
@needs_data
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    # 14 steps per epoch: killed at step 35, in epoch 3 of 4, after last.ckpt of epoch 2
    args = [
        *TINY,
        "trainer.max_epochs=4",
        "trainer.deterministic=true",
        "masks=fresh",
        "masks.val_num_masks=4",
        "ensemble.num_masks=4",
        "module.lr_decay=0.9",
        "seed=3",
    ]
    killed_log = tmp_path / "killed"
    killed = made_train(
        [*args, "+callbacks.kill._target_=test_scaleout.KillAfterSteps", "+callbacks.kill.steps=35"],
        killed_log,
        wait=False,
    )
    uninterrupted = made_train(args, tmp_path / "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL

    run_dir = only((killed_log / "train" / "runs").iterdir())
    assert not (run_dir / "results.json").exists() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    # the run's own overrides are used on resume: drop the test's kill callback from them
    resumed = made_train([*args, "~callbacks.kill", f"resume={run_dir}"], killed_log)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert only((killed_log / "train" / "runs").iterdir()) == run_dir  # continued in the same dir

    expected = json.loads(only((tmp_path / "uninterrupted" / "train" / "runs").glob("*/results.json")).read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert got["epochs"] == expected["epochs"]
    assert got["metrics"] == pytest.approx(expected["metrics"], rel=1e-9)
    # the resumed run continues the W&B run it started: two offline segments, one run id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("launcher", ["parallel", "local_queue"])
def test_each_parallel_job_runs_torch_with_its_share_of_the_cores(tmp_path, launcher):
    """joblib: cores // n_jobs; submitit local: cpus_per_task (1); not every core for every job."""
    result = made_train(
        ["-m", f"hydra/launcher={launcher}", *TINY, "trainer.max_epochs=1", "seed=0,1"],
        tmp_path,
        env={"OMP_NUM_THREADS": None},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    share = 1 if launcher == "local_queue" else max((os.cpu_count() or 1) // 2, 1)
    for job in job_dirs(sweep_dir(tmp_path)):
        assert json.loads((job / "results.json").read_text())["hardware"]["torch_threads"] == share
