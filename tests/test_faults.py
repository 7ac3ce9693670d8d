"""Real faults while a run writes its records: kills at each step of a write, $TMPDIR on another filesystem, a full
disk, a file-size limit, corrupt records, stray temporary files, and the resume lock seen from two hosts.

The tests that mount a tmpfs need root (``mount -t tmpfs``) and skip, saying why, where it is refused.
"""

import errno
import json
import logging
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch

from made_exp.runs import atomic
from made_exp.runs.atomic import WriteError, remove_stray_temporary_files, write_json_atomic, write_torch_atomic
from made_exp.runs.config import ConfigError
from made_exp.runs.resume import lock_run, resume_arguments
from made_exp.runs.rundir import check_checkpoint
from made_exp.runs.search import write_best
from made_exp.runs.sweep import job_summary, run_job

BIN = Path(sys.executable).parent
TINY = [
    "data=synthetic",
    "data.num_train=1000",  # short epochs
    "model.hidden_sizes=[256]",  # a checkpoint of ~100 KB: far more than the disk or file-size room left below
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
]
CORRUPT = '{"metrics": {"test/nll": 1.0'  # results.json cut short


def environment(**extra: str) -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **extra}


def made_train(
    args: list[str], preexec_fn: Callable[[], None] | None = None, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "made-train"), *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


def stray_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.tmp"))


def in_child(work: Callable[[], None], file_size_limit: int | None = None) -> tuple[int, str]:
    """Run ``work`` in a forked child (under a file-size limit, if given): its exit status (0 if it returned, 3 if
    it raised WriteError, 4 for anything else, -9 if killed) and the error's message, through a pipe (which no
    file-size limit cuts short)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        code, message = 4, ""
        try:
            if file_size_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python does at start-up: EFBIG, not a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
            work()
            code = 0
        except WriteError as error:
            code, message = 3, str(error)
        except BaseException as error:
            message = repr(error)
        finally:
            os.write(write_end, message.encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), message


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    """``mount(directory, size in bytes)``: a tmpfs of that size at ``directory``, unmounted afterwards; the test
    skips, saying why, where mounting is refused (not root, no mount namespace rights)."""
    mounted: list[Path] = []

    def mount(directory: Path, size: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip() or result.returncode}")
        mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch made-train run (copied by each test that changes it)."""
    run_dir = tmp_path_factory.mktemp("template") / "run"
    trained = made_train([*TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    return run_dir


def unfinished_copy(run_dir: Path, destination: Path) -> Path:
    """A copy of ``run_dir`` stopped after its first epoch: resume= continues it."""
    shutil.copytree(run_dir, destination)
    (destination / "results.json").unlink()
    return destination


# --- atomic writes ---------------------------------------------------------------------------------------------


def test_a_record_is_fsynced_before_its_rename_and_its_directory_after(tmp_path, monkeypatch):
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace

    def spied_fsync(descriptor: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{descriptor}") else "fsync file")
        fsync(descriptor)

    def spied_replace(source, target) -> None:
        calls.append(f"replace from {Path(source).parent}")
        replace(source, target)

    monkeypatch.setattr(os, "fsync", spied_fsync)
    monkeypatch.setattr(os, "replace", spied_replace)
    monkeypatch.setenv("TMPDIR", "/nonexistent-tmpdir")  # never used: the temporary file is beside its target
    monkeypatch.setattr("tempfile.tempdir", None)
    write_json_atomic(tmp_path / "results.json", {"test/nll": 1.0})
    assert calls == ["fsync file", f"replace from {tmp_path}", "fsync dir"]


@pytest.mark.parametrize("step", range(4))
def test_a_kill_at_each_step_of_a_write_leaves_the_old_file_or_the_new_one(tmp_path, step):
    """SIGKILL before mkstemp, the file's fsync, the rename, the directory's fsync: the target always loads whole."""
    target = tmp_path / "last.ckpt"
    write_torch_atomic(target, {"epoch": 1})

    def killed_at_step() -> None:
        seen = []

        def kill_at(name: str, original: Callable) -> Callable:
            def wrapper(*args, **kwargs):
                seen.append(name)
                if len(seen) - 1 == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(*args, **kwargs)

            return wrapper

        atomic.tempfile.mkstemp = kill_at("mkstemp", atomic.tempfile.mkstemp)
        atomic.os.fsync = kill_at("fsync", os.fsync)
        atomic.os.replace = kill_at("replace", os.replace)
        write_torch_atomic(target, {"epoch": 2})

    assert in_child(killed_at_step)[0] == -signal.SIGKILL
    assert torch.load(target, weights_only=True)["epoch"] == (2 if step == 3 else 1)  # renamed at step 2
    left = [path for path in tmp_path.iterdir() if path != target]
    assert len(left) == (1 if step in (1, 2) else 0)  # the temporary file, between its creation and its rename
    assert remove_stray_temporary_files(tmp_path) == left and list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_checkpoints_stay_whole_under_kills_at_each_step_with_tmpdir_on_another_filesystem(
    finished_run, tmp_path, tmpfs
):
    """The cluster case: $TMPDIR node-local, the run dir elsewhere. A made-train resume is SIGKILLed at each step of
    its last.ckpt write (temporary file, rename, copy, fsync: whatever the write does); every time the previous or
    the new last.ckpt is left whole, and a resume then cleans up and finishes."""
    tmpdir = tmpfs(tmp_path / "node-local-tmp", 64 * 2**20)
    assert os.stat(tmpdir).st_dev != os.stat(tmp_path).st_dev
    killer = tmp_path / "killer.py"
    killer.write_text(
        textwrap.dedent(
            """
            import os, shutil, signal, sys, tempfile
            import pytorch_lightning as pl

            step, seen, armed = int(os.environ["KILL_AT_STEP"]), [], [False]

            def kill_at(name, original):
                def wrapper(*args, **kwargs):
                    if armed[0]:
                        seen.append(name)
                        if len(seen) - 1 == step:
                            os.kill(os.getpid(), signal.SIGKILL)
                    return original(*args, **kwargs)
                return wrapper

            for module, name in [(tempfile, "mkstemp"), (os, "fsync"), (os, "replace"), (os, "rename"),
                                 (shutil, "copyfile"), (os, "sendfile")]:
                setattr(module, name, kill_at(name, getattr(module, name)))
            save = pl.Trainer.save_checkpoint

            def save_armed(self, filepath, *args, **kwargs):
                armed[0] = str(filepath).endswith("last.ckpt")
                try:
                    return save(self, filepath, *args, **kwargs)
                finally:
                    armed[0] = False

            pl.Trainer.save_checkpoint = save_armed
            from made_exp.cli.train import main
            sys.argv = ["made-train", *sys.argv[1:]]
            main()
            """
        )
    )
    killed_runs = []
    for step in range(12):
        run_dir = unfinished_copy(finished_run, tmp_path / f"killed_at_{step}")
        last = run_dir / "checkpoints" / "last.ckpt"
        before = last.read_bytes()
        killed = subprocess.run(
            [sys.executable, str(killer), f"resume={run_dir}", "trainer.max_epochs=2"],
            env=environment(TMPDIR=str(tmpdir), KILL_AT_STEP=str(step)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if killed.returncode == 0:  # past the write's last step: nothing left to kill
            break
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        check_checkpoint(last)
        state = torch.load(last, map_location="cpu", weights_only=False)
        assert last.read_bytes() == before or state["epoch"] == 1  # the previous epoch's, or the new one whole
        killed_runs.append(run_dir)
    assert len(killed_runs) >= 3, "the write should have had several steps to kill"
    resumed_run = next((run_dir for run_dir in killed_runs if stray_files(run_dir)), killed_runs[-1])
    resumed = made_train([f"resume={resumed_run}", "trainer.max_epochs=2"], TMPDIR=str(tmpdir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert stray_files(resumed_run) == []  # the killed write's temporary file, removed on resume
    assert json.loads((resumed_run / "results.json").read_text())["epochs"] == 2


# --- a full disk and a file-size limit ----------------------------------------------------------------------------


def test_a_write_past_the_file_size_limit_keeps_the_old_record_and_names_the_cause(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"old": True})
    written = in_child(lambda: write_json_atomic(target, {"padding": "x" * 100_000}), file_size_limit=4096)
    assert written == (3, f"cannot write {target}: file too large; the previous results.json is kept")
    assert json.loads(target.read_text()) == {"old": True} and list(tmp_path.iterdir()) == [target]


def test_optimization_results_are_written_atomically(tmp_path):
    """Under a file-size limit, optimization_results.yaml keeps its previous content (it used to be truncated)."""
    study = optuna.create_study()
    space = {"lr": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=space, value=0.5))
    path = tmp_path / "optimization_results.yaml"
    path.write_text("best_value: 2.0\n")
    written = in_child(lambda: write_best(study, path), file_size_limit=16)
    assert written == (3, f"cannot write {path}: file too large; the previous {path.name} is kept")
    assert path.read_text() == "best_value: 2.0\n" and list(tmp_path.iterdir()) == [path]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_previous_last_checkpoint_is_kept(finished_run, tmp_path, tmpfs):
    checkpoint_size = (finished_run / "checkpoints" / "last.ckpt").stat().st_size
    used = sum(-(-path.stat().st_size // 4096) * 4096 for path in finished_run.rglob("*") if path.is_file())
    disk = tmpfs(tmp_path / "disk", used + checkpoint_size // 2)  # room for the run, not for another checkpoint
    run_dir = unfinished_copy(finished_run, disk / "run")
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    full = made_train([f"resume={run_dir}", "trainer.max_epochs=2"])
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    (line,) = error_lines(full)
    assert f"cannot write {run_dir / 'checkpoints'}/" in line and "no space left on device" in line
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert stray_files(run_dir) == []


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_the_previous_last_checkpoint_is_kept(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    before, limit = last.read_bytes(), last.stat().st_size // 2

    def limited() -> None:  # prlimit --fsize; Python itself ignores SIGXFSZ, so writes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    big = made_train([f"resume={run_dir}", "trainer.max_epochs=2"], preexec_fn=limited)
    assert big.returncode == 2 and "Traceback" not in big.stderr, big.stderr[-3000:]
    (line,) = error_lines(big)
    assert f"cannot write {run_dir / 'checkpoints'}/" in line and "file too large" in line
    assert last.read_bytes() == before and stray_files(run_dir) == []


# --- a run's own records ------------------------------------------------------------------------------------------


def resumable_record(run_dir: Path, overrides: str = "- data=synthetic\n") -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(overrides)
    (run_dir / "checkpoints").mkdir()
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_corrupt_overrides_yaml_on_resume_is_one_error_naming_it(tmp_path):
    last = resumable_record(tmp_path, "- data=synthetic\n- [unclosed\n")
    torch.save({"state_dict": {"model.output.weight": torch.zeros(1)}, "loops": {}}, last)
    with pytest.raises(ConfigError, match=f"{tmp_path / '.hydra' / 'overrides.yaml'} is unreadable"):
        resume_arguments([f"resume={tmp_path}"])
    (tmp_path / ".hydra" / "overrides.yaml").write_text("data: synthetic\n")
    with pytest.raises(ConfigError, match="is not a list of overrides"):
        resume_arguments([f"resume={tmp_path}"])


@pytest.mark.parametrize(
    "payload", [{"weights": [1, 2]}, {"state_dict": {"encoder.weight": torch.zeros(1)}, "loops": {}}, [1, 2, 3]]
)
def test_a_valid_torch_file_that_is_not_a_made_train_checkpoint_is_refused_before_resuming(tmp_path, payload):
    last = resumable_record(tmp_path)
    torch.save(payload, last)
    with pytest.raises(ConfigError, match=f"{last}: not a made-train checkpoint"):
        resume_arguments([f"resume={tmp_path}"])


@pytest.mark.slow
def test_made_train_refuses_a_foreign_checkpoint_before_changing_the_run(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "run")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, run_dir / "checkpoints" / "last.ckpt")
    record = {path: path.read_bytes() for path in (run_dir / ".hydra").iterdir()}
    refused = made_train([f"resume={run_dir}"])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    (line,) = error_lines(refused)
    assert "last.ckpt: not a made-train checkpoint" in line
    assert {path: path.read_bytes() for path in (run_dir / ".hydra").iterdir()} == record
    assert sorted(path.name for path in (run_dir / "csv").iterdir()) == ["version_0"]


def sweep_job(job_dir: Path, results: str) -> Path:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    num: 0\n  overrides:\n    task: [seed=1]\n")
    (job_dir / "results.json").write_text(results)
    return job_dir


def test_a_sweep_rerun_skips_a_job_with_a_corrupt_results_json_and_the_summary_names_it(tmp_path, caplog):
    from omegaconf import OmegaConf

    job_dir = sweep_job(tmp_path / "0_seed=1", CORRUPT)
    cfg = OmegaConf.create({"paths": {"output_dir": str(job_dir)}, "overwrite": False})
    trained = []
    assert math.isnan(run_job(lambda cfg, resume_from=None: trained.append(cfg), cfg))  # no exception
    assert trained == [] and (job_dir / "results.json").read_text() == CORRUPT
    assert f"{job_dir / 'results.json'}: unreadable" in caplog.text
    row = job_summary(job_dir)
    assert row["status"] == "failed" and f"{job_dir / 'results.json'}: unreadable" in row["error"]


def test_a_sweep_job_that_fails_on_a_full_disk_lets_the_sweep_go_on(tmp_path):
    """Its error.json cannot be written either (a file-size limit here): the sweep still goes on to the next job."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "overwrite": False})

    def failing(cfg, resume_from=None):
        raise OSError(errno.ENOSPC, "No space left on device " + "x" * 5000)

    def job() -> None:
        logging.disable(logging.CRITICAL)  # the log goes to a file under the same limit
        assert math.isnan(run_job(failing, cfg))

    assert in_child(job, file_size_limit=1024) == (0, "")
    assert not (tmp_path / "error.json").exists() and stray_files(tmp_path) == []


def test_made_report_skips_a_corrupt_results_json_and_lists_it(tmp_path, capsys):
    from made_exp.cli.report import main
    from test_report import fake_config, write_run

    write_run(tmp_path / "0_seed=0", fake_config("dna", 0, "cycle", 1, None), nll=84.0)
    sweep_job(tmp_path / "1_seed=1", CORRUPT)
    main([str(tmp_path)])
    corrupt = tmp_path / "1_seed=1" / "results.json"
    assert f"made-report: {corrupt}: unreadable results.json" in capsys.readouterr().err
    assert f"{corrupt}: unreadable results.json" in (tmp_path / "report.md").read_text()
    assert corrupt.read_text() == CORRUPT


@pytest.mark.slow
def test_made_compare_skips_a_corrupt_results_json_names_it_and_still_writes_its_report(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "0_seed=0")
    corrupt = shutil.copytree(finished_run, tmp_path / "1_seed=1") / "results.json"  # checkpoints and all
    corrupt.write_text(CORRUPT)
    compared = subprocess.run(
        [str(BIN / "made-compare"), str(tmp_path), "--accelerator", "cpu"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr[-3000:]
    assert f"made-compare: skipped {corrupt}: unreadable" in compared.stderr
    assert f"- {corrupt}: unreadable" in (tmp_path / "report.md").read_text()
    assert corrupt.read_text() == CORRUPT


def test_only_our_own_temporary_files_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    ours = [tmp_path / ".results.json.a1b2c3d4.tmp", tmp_path / "checkpoints" / ".last.ckpt.x_9yz0ab.tmp"]
    theirs = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "sub" / ".results.json.a1b2c3d4.tmp"]
    for path in ours + theirs:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert sorted(remove_stray_temporary_files(tmp_path)) == sorted(ours)
    assert all(path.exists() for path in theirs) and not any(path.exists() for path in ours)


# --- the resume lock, seen from two hosts -------------------------------------------------------------------------


def hold_lock_elsewhere(run_dir: Path, host: str, pid: int) -> subprocess.Popen:
    """A made-train on ``host`` (socket.gethostname) holding the run's lock, its pid recorded as ``pid`` (another
    host's pids mean nothing here)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, socket, sys, time\n"
            f"socket.gethostname = lambda: {host!r}\n"
            f"os.getpid = lambda: {pid}\n"
            "from made_exp.runs.resume import lock_run\n"
            f"lock_run({str(run_dir)!r})\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_live_lock_from_another_host_is_held_whatever_its_pid_means_here(tmp_path):
    holder = hold_lock_elsewhere(tmp_path, "compute-node-7", 4_194_000)  # no such pid on this machine
    try:
        with pytest.raises(ConfigError, match="pid 4194000 on compute-node-7"):
            lock_run(tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_dead_holder_on_another_host_is_taken_whatever_its_pid_means_here(tmp_path):
    holder = hold_lock_elsewhere(tmp_path, "compute-node-7", os.getpid())  # a live, unrelated process here
    holder.kill()  # the job died without removing its lock file
    holder.wait()
    assert "compute-node-7" in (tmp_path / ".resume.lock").read_text()
    release = lock_run(tmp_path)
    record = json.loads((tmp_path / ".resume.lock").read_text())
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    release()
    assert not (tmp_path / ".resume.lock").exists()


def test_a_lock_held_from_another_uts_and_pid_namespace_is_judged_by_its_os_lock(tmp_path):
    """As real as two hosts get on one machine: the holder runs in its own UTS and PID namespaces (``unshare``), so
    its host name differs and its recorded pid is 1, which here is init: alive, and unrelated."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    holder = subprocess.Popen(
        [
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            f"hostname compute-node-7 && exec {sys.executable} -c "
            f'\'from made_exp.runs.resume import lock_run; lock_run("{tmp_path}"); print("locked", flush=True); '
            "import time; time.sleep(120)'",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if holder.stdout.readline().strip() != "locked":
        holder.wait()
        pytest.skip(f"cannot make UTS and PID namespaces here (needs root): {holder.stderr.read().strip()}")
    try:
        with pytest.raises(ConfigError, match="pid 1 on compute-node-7"):
            lock_run(tmp_path)
    finally:
        holder.kill()  # --kill-child: the holder in the namespace dies with it
        holder.wait()
    deadline = time.monotonic() + 30  # the namespace's processes die just after unshare itself
    while True:
        try:
            lock_run(tmp_path)()  # no process holds it any more: stale, although pid 1 is alive here
            break
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_without_os_locks_a_record_from_another_host_counts_as_held(tmp_path, monkeypatch):
    def no_locks(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("fcntl.flock", no_locks)
    lock = tmp_path / ".resume.lock"
    lock.write_text(json.dumps({"host": "compute-node-7", "pid": 4_194_000, "started": "2026-01-01T00:00:00"}))
    with pytest.raises(ConfigError, match=f"on compute-node-7.*this filesystem has no OS locks.*remove {lock}"):
        lock_run(tmp_path)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 4_194_000}))  # this host, dead
    lock_run(tmp_path)()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))  # this host, alive
    with pytest.raises(ConfigError, match="another made-train"):
        lock_run(tmp_path)


def test_two_resumes_in_one_machine_exclude_each_other_and_the_second_names_the_first(tmp_path):
    release = lock_run(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-c", f"from made_exp.runs.resume import lock_run; lock_run({str(tmp_path)!r})"],
            capture_output=True,
            text=True,
        )
        assert second.returncode != 0 and f"pid {os.getpid()} on {socket.gethostname()}" in second.stderr
    finally:
        release()
