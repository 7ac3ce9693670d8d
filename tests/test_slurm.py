"""``hydra/launcher=slurm`` against a real single-node SLURM (``tests/slurm_cluster.py``, skipped
without the ``slurm-wlm``/``munge`` packages or root): a job array, DDP through srun, a time limit
with requeue and resume, ``scancel`` and a rerun, and threads per task."""

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from optuna.trial import TrialState

from docs_blocks import runnable_blocks
from docs_tiny import install_wrappers
from made_exp.lightning.loading import load_run
from slurm_cluster import ClusterUnavailable, SlurmCluster, start, stop
from test_scaleout import TINY, job_dirs, made_train, needs_data, only, sweep_dir

# one CPU and 1 GB per task: the 2-core CI machine runs two jobs of an array at once; job dirs named
# by number only (the overrides would pass the 255-character limit on a file name)
SLURM = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "logger=csv",
    "hydra.sweep.subdir=${hydra.job.num}",
]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    state_dir = tmp_path_factory.mktemp("slurm")
    try:
        cluster = start(state_dir)
    except ClusterUnavailable as error:
        pytest.skip(f"no local SLURM cluster: {error}")
    try:
        yield cluster
    finally:
        stop(state_dir)


def on_slurm(cluster: SlurmCluster, args: list[str], log_dir: Path, **kwargs):
    """``made-train -m hydra/launcher=slurm ... args`` submitted to ``cluster``."""
    return made_train([*SLURM, *args], log_dir, env={**cluster.env, **kwargs.pop("env", {})}, **kwargs)


def output(result) -> str:
    return (result.stdout or "")[-3000:] + (result.stderr or "")[-3000:]


class StallOnce(pl.Callback):
    """At the start of epoch ``epoch``, the first time only (``stalled.txt``), wait up to ``seconds`` for a
    signal, as a long epoch would. Every fit appends the epoch it starts at to ``fit_starts.txt``."""

    def __init__(self, epoch: int, seconds: float = 150):
        self.epoch, self.seconds = epoch, seconds

    def on_train_start(self, trainer, *args) -> None:
        with open(Path(HydraConfig.get().runtime.output_dir) / "fit_starts.txt", "a") as starts:
            starts.write(f"{trainer.current_epoch}\n")

    def on_train_epoch_start(self, trainer, *args) -> None:
        marker = Path(HydraConfig.get().runtime.output_dir) / "stalled.txt"
        if trainer.current_epoch != self.epoch or marker.exists():
            return
        marker.write_text(f"stalled at the start of epoch {self.epoch}\n")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not trainer.received_sigterm:  # the preemption signal raises here
            time.sleep(0.1)


def fit_starts(job: Path) -> list[int]:
    return [int(epoch) for epoch in (job / "fit_starts.txt").read_text().split()]


@pytest.mark.slow
@needs_data
def test_job_array_runs_every_job_with_its_cpus_and_a_failed_job_fails_the_sweep(slurm_cluster, tmp_path):
    # no OMP_NUM_THREADS: each job's thread count comes from its SLURM allocation
    result = on_slurm(slurm_cluster, [*TINY, "model.num_masks=0,1,2"], tmp_path, env={"OMP_NUM_THREADS": None})
    assert result.returncode == 1, output(result)  # model.num_masks=0 failed; the others still ran
    sweep = sweep_dir(tmp_path)
    assert len(list((sweep / ".submitit").glob("*_[012]"))) == 3  # three tasks of one SLURM array
    failed, *finished = job_dirs(sweep)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["failed"], summary["incomplete"]) == (2, 1, 0)
    assert summary["jobs"][0]["error"].startswith("ConfigError: model.num_masks=0")
    assert (failed / "error.json").is_file() and not (failed / "results.json").exists()
    for job in finished:
        results = json.loads((job / "results.json").read_text())
        assert math.isfinite(results["metrics"]["test/nll"])
        assert results["hardware"]["torch_threads"] == 1  # cpus_per_task=1, not every core of the node


@pytest.mark.slow
@needs_data
def test_ddp_through_srun_matches_single_process_evaluation(slurm_cluster, tmp_path):
    result = on_slurm(
        slurm_cluster,
        [*TINY, "hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
        tmp_path,
    )
    assert result.returncode == 0, output(result)
    sweep = sweep_dir(tmp_path)
    job = only(job_dirs(sweep))
    task_logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(task_logs) == 2  # srun started the two ranks as the tasks of one SLURM job
    assert not (job / "train_ddp_process_1.log").exists()  # Lightning did not start a rank itself
    metrics = json.loads((job / "results.json").read_text())["metrics"]

    _, datamodule, module, _ = load_run(job)  # the best checkpoint, in this one process
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (validation,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    # every validation and test example scored once over the two ranks: one process's means
    assert metrics["val/best_nll"] == pytest.approx(validation["val/nll"], rel=1e-9)
    assert metrics["test/nll"] == pytest.approx(module.test_results["test/nll"], rel=1e-9)


@pytest.mark.slow
@needs_data
def test_job_past_its_time_limit_is_requeued_and_resumes_to_the_uninterrupted_result(slurm_cluster, tmp_path):
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
    # A 1-minute limit (SLURM's smallest) and USR2 5 s before it, which slurmctld sends 25 to 55 s into
    # the job (it checks every 30 s and signals up to 30 s early); the job stalls in epoch 2 until then.
    sweep = on_slurm(
        slurm_cluster,
        [
            *args,
            "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=5",
            "+callbacks.stall._target_=test_slurm.StallOnce",
            "+callbacks.stall.epoch=2",
        ],
        tmp_path / "slurm",
        wait=False,
    )
    uninterrupted = made_train([*args, "logger=csv"], tmp_path / "uninterrupted")  # one thread, as the job
    assert uninterrupted.returncode == 0, output(uninterrupted)
    stdout, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stdout[-3000:]

    job = only(job_dirs(sweep_dir(tmp_path / "slurm")))
    starts = fit_starts(job)
    # requeued, then continued from last.ckpt of epoch 1 (a loaded machine may take the signal before the
    # stall: then one more requeue, also resumed, with one more minute)
    assert starts[0] == 0 and starts[-1] == 2 and len(starts) >= 2, starts
    expected = json.loads(only((tmp_path / "uninterrupted" / "train" / "runs").glob("*/results.json")).read_text())
    got = json.loads((job / "results.json").read_text())
    assert got["epochs"] == expected["epochs"]
    assert got["metrics"] == expected["metrics"]  # bitwise: same thread count, same data order and masks


@pytest.mark.slow
@needs_data
def test_cancelled_job_is_incomplete_and_a_rerun_continues_it(slurm_cluster, tmp_path):
    args = [
        *TINY,
        "trainer.max_epochs=3",
        "hydra.launcher.timeout_min=5",
        "+callbacks.stall._target_=test_slurm.StallOnce",
        "+callbacks.stall.epoch=1",
    ]
    sweep = on_slurm(slurm_cluster, args, tmp_path, wait=False)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("train/multiruns/*/*/stalled.txt")):
        assert sweep.poll() is None and time.monotonic() < deadline, "the job never reached epoch 1"
        time.sleep(0.5)
    (job_id,) = slurm_cluster.run("squeue", "--noheader", "--format=%A").split()
    slurm_cluster.run("scancel", job_id)
    stdout, _ = sweep.communicate(timeout=180)
    assert sweep.returncode == 1, stdout[-3000:]
    sweep_path = sweep_dir(tmp_path)
    job = only(job_dirs(sweep_path))
    summary = json.loads((sweep_path / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["incomplete"]) == (0, 1)
    assert not (job / "results.json").exists() and not (job / "error.json").exists()

    rerun = on_slurm(slurm_cluster, [*args, f"hydra.sweep.dir={sweep_path}"], tmp_path)
    assert rerun.returncode == 0, output(rerun)
    assert fit_starts(job) == [0, 1]  # continued from last.ckpt of epoch 0
    assert json.loads((sweep_path / "sweep_summary.json").read_text())["finished"] == 1


@pytest.mark.slow
@needs_data
def test_optuna_trials_run_as_slurm_jobs_of_one_study_none_proposed_twice(slurm_cluster, tmp_path):
    """The search asks a batch of 2 trials at a time and submits each batch as a SLURM array; the study lives
    in the sweep dir's SQLite."""
    search = [
        "hydra/sweeper=optuna_tpe",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "data=dna",
        "model.hidden_sizes=[16]",
        "model.num_masks=1",
        "trainer.max_epochs=1",
        "module.num_samples=0",
        "~callbacks.rich_progress_bar",
    ]
    result = on_slurm(slurm_cluster, search, tmp_path)
    assert result.returncode == 0, output(result)
    sweep = sweep_dir(tmp_path)
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [(trial.number, trial.state) for trial in study.trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    lrs = [trial.params["optimizer.lr"] for trial in study.trials]
    assert len(set(lrs)) == 4
    assert len(list((sweep / ".submitit").glob("*_[01]"))) == 4  # two arrays of two tasks


@pytest.mark.slow
@needs_data
def test_a_pruned_trial_stops_in_its_slurm_job_and_is_pruned_in_the_study(slurm_cluster, tmp_path):
    """Each SLURM job opens its own trial in the sweep dir's SQLite and reports to it (tests/test_pruning.py)."""
    search = [
        "hydra/sweeper=optuna_tpe",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "+hydra.sweeper.pruners.always={_target_:optuna.pruners.ThresholdPruner,upper:0.0}",  # every val/nll > 0
        "hydra.sweeper.pruner=always",
        *TINY,  # 2 epochs: a pruned trial stops after 1
        "module.num_samples=0",
    ]
    result = on_slurm(slurm_cluster, search, tmp_path)
    assert result.returncode == 0, output(result)
    sweep = sweep_dir(tmp_path)
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED] * 2
    assert all(len(trial.intermediate_values) == 1 for trial in study.trials)
    for job in job_dirs(sweep):
        results = json.loads((job / "results.json").read_text())
        assert (results["stopped_by"], results["epochs"]) == ("pruned", 1)
    assert json.loads((sweep / "sweep_summary.json").read_text())["pruned"] == 2


@pytest.mark.slow
@needs_data
def test_the_launchers_defaults_fit_a_cpu_only_cluster_and_a_refused_request_is_one_line(slurm_cluster, tmp_path):
    defaults = ["-m", "hydra/launcher=slurm", "logger=csv", "hydra.sweep.subdir=${hydra.job.num}", *TINY]
    result = made_train([*defaults, "trainer.max_epochs=1"], tmp_path / "fits", env=slurm_cluster.env)
    assert result.returncode == 0, output(result)  # no GPU, one CPU, the cluster's memory: what any cluster has
    assert (only(job_dirs(sweep_dir(tmp_path / "fits"))) / "results.json").is_file()
    refused = made_train([*defaults, "hydra.launcher.gpus_per_node=1"], tmp_path / "gpu", env=slurm_cluster.env)
    errors = [line for line in refused.stderr.splitlines() if "made-train: error:" in line]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, output(refused)
    assert len(errors) == 1 and "gres" in errors[0] and "hydra.launcher.gpus_per_node" in errors[0]


DOCS_ON_THE_CLUSTER = "tests/test_slurm.py runs this block on a single-node one"


@pytest.mark.slow
@needs_data
def test_the_docs_slurm_blocks_run_on_the_cluster(slurm_cluster, tmp_path):
    """The docs' SLURM commands that need only a cluster (marked so for tests/test_docs.py) run here, in page order,
    with the docs' tiny settings (tests/docs_tiny.py)."""
    blocks = [
        block
        for page in ("docs/tutorials/laptop-to-slurm.md", "docs/how-to/resume.md")
        for block in runnable_blocks(page)
        if block.skip_reason and DOCS_ON_THE_CLUSTER in block.skip_reason
    ]
    assert len(blocks) == 3
    wrappers = install_wrappers(tmp_path / "bin")
    env = {
        **slurm_cluster.env,
        "PATH": os.pathsep.join([str(wrappers), str(Path(sys.executable).parent), slurm_cluster.env["PATH"]]),
        "MADE_DATA_DIR": os.path.abspath(os.environ["MADE_DATA_DIR"]),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    for block in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{block.page}:{block.line}\n{block.code}{output(done)}"
    summaries = [json.loads(path.read_text()) for path in tmp_path.glob("sweeps/*/sweep_summary.json")]
    assert summaries and all(summary["failed"] == summary["incomplete"] == 0 for summary in summaries)
