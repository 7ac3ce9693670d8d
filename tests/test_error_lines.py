"""One line, not a traceback: unwritable or too-long run dirs, unparsable overrides, storage URLs, sweeps over
paths, a memory guard that counts everything that grows with K, odd data files, and the tools on live runs."""

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from omegaconf import OmegaConf

import made_exp.cli.train  # noqa: F401  (registers the made.job_dir resolver of hydra.sweep.subdir)
from conftest import compose_train, random_made
from made_exp.cli.sample import save_samples
from made_exp.core.made import MADE
from made_exp.core.scoring import mask_log_probs, mixture_log_prob
from made_exp.data.files import DATASETS, DataError, load_npz_splits, load_own_data
from made_exp.runs import config
from made_exp.runs.config import ConfigError, check_mask_bank_memory, mask_bank_bytes
from made_exp.runs.search import open_study, storage_errors
from made_exp.runs.sweep import write_sweep_summary
from test_robustness import TINY, assert_one_line_error, cli, run_dirs

DATA_DIR = os.environ.get("MADE_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="MADE_DATA_DIR not set")


@contextmanager
def read_only_dir(path: Path) -> Iterator[str]:
    """``path`` as a directory this test's children cannot write: a read-only tmpfs mounted there (root), or mode
    555 (any other user, for whom the mode holds); yields the errno's words. Skips where neither can be done."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield "permission denied"
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:  # as root, mode 555 does not stop a write
        pytest.skip(f"root cannot mount a read-only tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield "read-only file system"
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # lazy: a test may still hold a file open


# ---- a run dir that cannot be written


@pytest.mark.slow
def test_a_log_dir_that_cannot_be_written_is_one_line(tmp_path):
    with read_only_dir(tmp_path / "logs") as problem:
        result = cli("made-train", ["data=synthetic", *TINY], tmp_path / "logs")
    assert_one_line_error(result, f"cannot write {tmp_path / 'logs'}", problem, "paths.log_dir")


@pytest.mark.slow
def test_a_run_dir_name_over_255_bytes_is_one_line(tmp_path):
    run_dir = tmp_path / ("x" * 300)
    result = cli("made-train", ["data=synthetic", f"hydra.run.dir={run_dir}", *TINY], tmp_path)
    assert_one_line_error(result, "255 bytes", "hydra.run.dir")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_override_hydra_cannot_read_says_how_to_quote_it(tmp_path):
    result = cli("made-train", ["data=npz", "data.path=/data/dätä.npy", "--cfg", "job"], tmp_path)
    assert_one_line_error(result, "data.path=/data/dätä.npy", """'data.path="/data/dätä.npy"'""")
    quoted = cli("made-train", ["data=npz", 'data.path="/data/dätä.npy"', "--cfg", "job"], tmp_path)
    assert quoted.returncode == 0 and "path: /data/dätä.npy" in quoted.stdout


# ---- sweep job dirs: one path component, every job in the summary


@pytest.mark.parametrize(
    "overrides", ["data.path=/a/good.npy,data=npz", "data.name=" + "x" * 300, "data.path=/ä/" + "é" * 200]
)
def test_a_sweep_job_dir_is_one_path_component_of_at_most_255_bytes(overrides):
    cfg = compose_train([], with_hydra=True)
    cfg.hydra.job.num, cfg.hydra.job.override_dirname = 3, overrides
    name = cfg.hydra.sweep.subdir
    assert "/" not in name and name.startswith("3_") and len(name.encode()) <= 255


def test_a_sweep_job_dir_without_slashes_keeps_hydras_name():  # a rerun of an older sweep finds its jobs
    cfg = compose_train([], with_hydra=True)
    cfg.hydra.job.num, cfg.hydra.job.override_dirname = 1, "data=dna,seed=1"
    assert cfg.hydra.sweep.subdir == "1_data=dna,seed=1"


def test_the_sweep_summary_finds_job_dirs_nested_by_an_older_sweep(tmp_path):
    for number, parts, record in ((0, ["0_data.path=", "a", "good.npy"], None), (1, ["1_x"], "error.json")):
        job = tmp_path.joinpath(*parts)
        (job / ".hydra").mkdir(parents=True)
        hydra = {"hydra": {"job": {"num": number}, "overrides": {"task": [f"seed={number}"]}}}
        OmegaConf.save(OmegaConf.create(hydra), job / ".hydra" / "hydra.yaml")
        if record:
            (job / record).write_text(json.dumps({"error": "DataError: bad"}))
    jobs = write_sweep_summary(tmp_path)
    assert [(row["dir"], row["status"]) for row in jobs] == [
        ("0_data.path=/a/good.npy", "incomplete"),
        ("1_x", "failed"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_a_sweep_over_paths_exits_1_and_its_summary_names_every_job_without_a_traceback(tmp_path, launcher):
    rows = (np.random.default_rng(0).random((120, 8)) < 0.5).astype(np.float32)
    np.save(tmp_path / "good.npy", rows)
    np.save(tmp_path / "bad.npy", rows * 2)
    sweep = tmp_path / "sweep"
    args = ["-m", "data=npz", f"data.path={tmp_path / 'good.npy'},{tmp_path / 'bad.npy'}", *TINY]
    args += [f"hydra.sweep.dir={sweep}"] + (["hydra/launcher=packed"] if launcher == "packed" else [])
    result = cli("made-train", args, tmp_path / "logs")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr  # a user error is its line
    jobs = [path for path in sweep.iterdir() if path.is_dir()]
    assert len(jobs) == 2 and all((job / ".hydra").is_dir() for job in jobs)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["finished"], summary["failed"]) == (1, 1)
    assert "values other than 0 and 1" in next(row for row in summary["jobs"] if row["status"] == "failed")["error"]


# ---- Optuna storage


def _open(storage: str) -> None:
    with storage_errors(storage):
        open_study("study", storage, "minimize", optuna.samplers.RandomSampler, seed=0)


def test_an_unknown_storage_driver_is_one_line_with_examples():
    with pytest.raises(ConfigError, match=r"nosuchdb://x/y: no database driver 'nosuchdb'.*sqlite:///") as caught:
        _open("nosuchdb://x/y")
    assert "\n" not in str(caught.value)


def test_an_unreachable_storage_server_is_one_line_naming_the_cause():
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match=r"made:\*\*\*@127.0.0.1:1/x: .*refused; check that the server") as caught:
        _open("postgresql+psycopg://made:secret@127.0.0.1:1/x")
    assert "\n" not in str(caught.value) and "secret" not in str(caught.value)


def test_a_read_only_sqlite_study_says_so(tmp_path):
    directory = tmp_path / "db"
    storage = f"sqlite:///{directory / 'optuna.db'}"
    create = f"import optuna; optuna.create_study(study_name='study', storage={storage!r})"
    with read_only_dir(directory) as problem:  # a tmpfs remounted read-only (root), or mode 555
        if problem == "read-only file system":
            subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)
            subprocess.run([sys.executable, "-c", create], check=True, capture_output=True)  # closed when it ends
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        else:
            directory.chmod(0o755)
            subprocess.run([sys.executable, "-c", create], check=True, capture_output=True)
            (directory / "optuna.db").chmod(0o444)
            directory.chmod(0o555)
        with pytest.raises(ConfigError, match="attempt to write a readonly database; the database") as caught:
            _open(storage)
        assert "\n" not in str(caught.value)


# ---- the memory guard


def test_the_memory_guard_counts_what_building_the_bank_takes():
    """A fresh process builds a bank of K masks; its peak memory growth stays under the guard's estimate."""
    code = (
        "import resource, torch; from made_exp.core.made import MADE; torch.ones(1);"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "MADE(180, [500], num_masks=20000);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)"
    )
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    cfg = compose_train(["data=dna", "model.num_masks=20000", "ensemble.num_masks=1"], with_hydra=False)
    assert grown <= mask_bank_bytes(cfg, 180)


def test_a_million_masks_are_refused_where_they_would_not_fit(monkeypatch):
    """dna, K = 10^6: the bank alone (10.1 GiB) passed a check against half of a 23 GiB machine, and the run died."""
    monkeypatch.setattr(config, "available_memory", lambda: 22 * 2**30)
    cfg = compose_train(["data=dna", "model.num_masks=1000000"], with_hydra=False)
    with pytest.raises(ConfigError, match=r"model.num_masks=1000000 .* more than the 22.0 GiB available"):
        check_mask_bank_memory(cfg, 180)
    check_mask_bank_memory(compose_train(["data=dna", "model.num_masks=1000"], with_hydra=False), 180)


def test_the_memory_available_is_at_most_what_the_kernel_says():
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        pytest.skip("no /proc/meminfo")
    kernel = next(int(line.split()[1]) for line in meminfo.read_text().splitlines() if "MemAvailable" in line)
    assert 0 < config.available_memory() <= kernel * 1024 * 1.05


# ---- odd data files and wide models


@pytest.mark.parametrize("content", [os.urandom(400), b"just some text\n"])
def test_a_file_that_is_neither_npz_nor_npy_says_so(tmp_path, content):
    path = tmp_path / "dna.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"dna.npz: not an .npz or .npy file") as caught:
        load_npz_splits(path, DATASETS["dna"])
    assert "pickle" not in str(caught.value)


def test_a_broken_npy_is_called_npy(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, np.zeros((50, 4), np.float32))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"rows.npy: unreadable .npy, corrupt or truncated") as caught:
        load_own_data(path)
    assert ".npz" not in str(caught.value)


def test_the_unreachable_inputs_warning_is_a_count_and_the_first_few():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MADE(100000, [4], num_masks=1)
    (warning,) = [w for w in caught if "reach no output" in str(w.message)]
    assert len(str(warning.message)) < 400 and " of 100000 inputs (" in str(warning.message)


# ---- made-sample's outputs, and the tools on an unfinished run


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_samples_save_as_arrays(tmp_path, suffix):
    model = random_made(6, num_masks=2)
    samples = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    log_prob = mixture_log_prob(mask_log_probs(model, samples, [0, 1]))
    path = save_samples(samples, log_prob, tmp_path / f"samples{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left beside it
    loaded = np.load(path)
    saved = loaded if suffix == ".npy" else loaded["samples"]
    assert saved.dtype == np.uint8 and np.array_equal(saved, samples.numpy())
    if suffix == ".npz":
        assert np.allclose(loaded["log_prob"], log_prob.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--num-samples", "0"], ["--out", "samples.txt"]])
def test_made_sample_refuses_a_bad_request_in_one_line(tmp_path, args):
    result = cli("made-sample", [str(tmp_path), *args], tmp_path)
    assert_one_line_error(result, args[0])


@pytest.mark.slow
@needs_data
def test_the_tools_on_an_unfinished_run_say_so_and_the_evaluation_records_it(tmp_path):
    run = tmp_path / "run"
    trained = cli("made-train", ["data=dna", f"hydra.run.dir={run}", *TINY], tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run / "results.json").unlink()  # what a run still training (or stopped) looks like to a tool
    evaluated = cli("made-eval", [str(run), "--accelerator", "cpu"], tmp_path)
    assert evaluated.returncode == 0 and "made-eval: warning: " in evaluated.stderr and "unfinished" in evaluated.stderr
    assert json.loads((run / "eval_mixture.json").read_text())["run_status"] == "unfinished"
    sampled = cli("made-sample", [str(run), "--num-samples", "4", "--out", str(tmp_path / "s.npz")], tmp_path)
    assert sampled.returncode == 0 and "made-sample: warning: " in sampled.stderr
    assert np.load(tmp_path / "s.npz")["samples"].shape == (4, 180)
    assert run_dirs(tmp_path) == []  # nothing else under the log dir
