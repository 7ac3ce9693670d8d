"""What a scheduler or a person does to a running made-train: SIGTERM, Ctrl-C, and resuming afterwards."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from made_exp.runs.config import ConfigError
from made_exp.runs.resume import lock_run, resume_arguments

BIN = Path(sys.executable).parent
LONG = [
    "data=synthetic",
    "data.num_train=4000",
    "model.hidden_sizes=[128]",
    "trainer.max_epochs=40",
    "callbacks.early_stopping.patience=100",
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
]


def environment(log_dir: Path) -> dict:
    return {**os.environ, "MADE_LOG_DIR": str(log_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def start_and_signal(log_dir: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Start a long made-train, send ``signum`` once its first epoch is checkpointed; (result, run dir)."""
    # a background job of a non-interactive shell (CI started with `&`) inherits SIGINT ignored: undo that here,
    # as a terminal's Ctrl-C reaches a foreground made-train
    process = subprocess.Popen(
        [str(BIN / "made-train"), *LONG],
        env=environment(log_dir),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(log_dir.glob("train/runs/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.1)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), run_dir


def made_train(args: list[str], log_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "made-train"), *args], env=environment(log_dir), capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_sigterm_exits_non_zero_says_how_to_resume_and_the_run_resumes_with_its_own_overrides(tmp_path):
    stopped, run_dir = start_and_signal(tmp_path, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"made-train resume={run_dir}" in stopped.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()

    resumed = made_train([f"resume={run_dir}"], tmp_path)  # no other override: the run's own are used
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["data"]["num_train"] == 4000 and results["epochs"] == 40


@pytest.mark.slow
def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    stopped, run_dir = start_and_signal(tmp_path, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert f"made-train resume={run_dir}" in stopped.stderr


@pytest.mark.slow
def test_a_resume_that_contradicts_the_run_is_refused_before_its_record_changes(tmp_path):
    stopped, run_dir = start_and_signal(tmp_path, signal.SIGTERM)
    record = (run_dir / ".hydra" / "config.yaml").read_bytes()
    refused = made_train([f"resume={run_dir}", "data=dna"], tmp_path)
    assert refused.returncode == 2 and "contradicts the run's own data=synthetic" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == record

    release = lock_run(run_dir)  # a live process (this one) holds it
    locked = made_train([f"resume={run_dir}"], tmp_path)
    assert locked.returncode == 2 and "another made-train" in locked.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == record

    release()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a write cut short
    truncated = made_train([f"resume={run_dir}"], tmp_path)
    assert truncated.returncode == 2 and f"{last}: unreadable checkpoint" in truncated.stderr
    assert "Traceback" not in truncated.stderr


def saved_run(run_dir: Path, overrides: str) -> None:
    """A stand-in run dir: ``overrides`` as its .hydra/overrides.yaml, and a last.ckpt (MADE weights, loop state)."""
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(overrides)
    (run_dir / "checkpoints").mkdir()
    checkpoint = {"state_dict": {"model.output.weight": torch.zeros(1)}, "loops": {}}
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")


def test_saved_overrides_come_first_and_new_keys_are_kept(tmp_path):
    saved_run(tmp_path, "- data=dna\n- model.num_masks=4\n- resume=old\n")
    arguments = resume_arguments([f"resume={tmp_path}", "trainer.max_epochs=9", "data=dna"])
    assert arguments == ["model.num_masks=4", f"resume='{tmp_path}'", "trainer.max_epochs=9", "data=dna"]
    with pytest.raises(ConfigError, match="contradicts"):
        resume_arguments([f"resume={tmp_path}", "model.num_masks=8"])
    assert resume_arguments(["data=dna"]) == ["data=dna"]


def test_saved_overrides_go_after_hydras_options(tmp_path):
    saved_run(tmp_path, "- model.num_masks=4\n")
    arguments = resume_arguments(["--config-dir", "my_conf", f"resume={tmp_path}"])
    assert arguments == ["--config-dir", "my_conf", "model.num_masks=4", f"resume='{tmp_path}'"]


def test_a_resume_may_set_the_training_budget_anew_and_nothing_else(tmp_path):
    saved_run(tmp_path, "- data=dna\n- trainer.max_epochs=236\n")
    arguments = resume_arguments([f"resume={tmp_path}", "trainer.max_epochs=3000", "+trainer.max_time=00:02:00:00"])
    assert arguments == ["data=dna", f"resume='{tmp_path}'", "trainer.max_epochs=3000", "+trainer.max_time=00:02:00:00"]
    with pytest.raises(ConfigError, match="only trainer.max_epochs and trainer.max_time may be set anew"):
        resume_arguments([f"resume={tmp_path}", "trainer.max_epochs=3000", "data=nips"])


@pytest.mark.slow
def test_a_run_capped_by_its_own_max_epochs_trains_on_to_the_uninterrupted_result(tmp_path):
    """A run started with ``trainer.max_epochs=2`` and finished is resumed with ``trainer.max_epochs=4``: it goes on
    from its last checkpoint to the model that a 4-epoch run trains."""
    tiny = [
        "data=synthetic",
        "model.hidden_sizes=[16]",
        "logger=csv",
        "module.num_samples=0",
        "~callbacks.rich_progress_bar",
        "callbacks.early_stopping.patience=100",
    ]
    capped, whole = tmp_path / "capped", tmp_path / "whole"
    for run_dir, epochs in ((capped, 2), (whole, 4)):
        done = made_train([*tiny, f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    resumed = made_train([f"resume={capped}", "trainer.max_epochs=4", "overwrite=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = [json.loads((run_dir / "results.json").read_text()) for run_dir in (capped, whole)]
    assert [r["epochs"] for r in results] == [4, 4]
    assert results[0]["metrics"]["test/nll"] == results[1]["metrics"]["test/nll"]
    assert results[0]["per_mask_nll"] == results[1]["per_mask_nll"]


@pytest.mark.slow
def test_a_finished_run_reopened_and_stopped_reads_as_unfinished_and_keeps_its_earlier_results(tmp_path):
    """``overwrite=true`` reopens a finished run; a SIGTERM before it finishes again leaves no results.json (whose
    numbers the checkpoints no longer hold) but results.previous.json, and a plain resume then finishes it."""
    run_dir = tmp_path / "run"
    done = made_train([*LONG, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    finished_at = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    reopen = [str(BIN / "made-train"), f"resume={run_dir}", "trainer.max_epochs=40", "overwrite=true"]
    process = subprocess.Popen(
        reopen, env=environment(tmp_path), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns == finished_at and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr[-3000:]
    assert not (run_dir / "results.json").exists()
    assert json.loads((run_dir / "results.previous.json").read_text())["epochs"] == 1

    resumed = made_train([f"resume={run_dir}"], tmp_path)  # unfinished: no overwrite=true needed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 40


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".resume.lock").write_text(dead.stdout.strip())  # an older made-train's record: a pid alone
    release = lock_run(tmp_path)
    assert json.loads((tmp_path / ".resume.lock").read_text())["pid"] == os.getpid()
    release()


def test_a_key_repeated_on_the_command_line_counts_by_its_last_value(tmp_path):
    """Hydra takes the last of ``trainer.max_epochs=2 trainer.max_epochs=4``; so does the resume check."""
    saved_run(tmp_path, "- trainer.max_epochs=2\n- trainer.max_epochs=4\n")
    given = ["trainer.max_epochs=2", "trainer.max_epochs=4", f"resume={tmp_path}"]
    assert resume_arguments(given) == [*given[:2], f"resume='{tmp_path}'"]


def test_a_multirun_job_resumes_from_its_dir_whose_name_holds_the_overrides(tmp_path):
    """A sweep job's dir is named by its overrides (``0_data=synthetic,seed=3``): ``=`` and ``,`` that Hydra's
    override grammar would split on. ``made-train resume=<that dir>`` as written (or Hydra-quoted) continues it."""
    tiny = [
        "data=synthetic",
        "model.hidden_sizes=[16]",
        "logger=csv",
        "module.num_samples=0",
        "~callbacks.rich_progress_bar",
        "trainer.max_epochs=2",
    ]
    swept = made_train(["-m", *tiny, "seed=3", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert swept.returncode == 0, swept.stderr[-3000:]
    (job_dir,) = [path.parent for path in (tmp_path / "sweep").glob("*/results.json")]
    assert {"=", ","} <= set(job_dir.name)
    (job_dir / "results.json").unlink()  # as if the job had been stopped after its last epoch
    resumed = made_train([f"resume={job_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((job_dir / "results.json").read_text())["config"]["seed"] == 3
    again = made_train([f"resume='{job_dir}'", "overwrite=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "train" / "runs").exists()  # both continued in the job's own dir, not a new run dir
