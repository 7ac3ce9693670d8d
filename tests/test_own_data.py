"""One's own data: a file (release format, or one array split by fractions) or an array in memory, validated
like the paper sets; data paths that are not usable files are one error naming them, never a cached copy."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.cli.report import report
from made_exp.data import files
from made_exp.data.datamodules import NPZDataModule, TensorDataModule
from made_exp.data.files import DATASETS, DataError, DatasetInfo, resolve_dataset
from made_exp.lightning.loading import build_datamodule
from made_exp.runs.config import ConfigError, absolute_data_paths, validate_config
from test_robustness import assert_one_line_error, cli, run_dirs

TINY = DatasetInfo("tiny", input_dim=4, num_train=6, num_valid=3, num_test=2, url="http://127.0.0.1:9/tiny.npz")
ROWS = {"train": 30, "valid": 12, "test": 9}


def release_arrays(input_dim: int = 7, rows: dict[str, int] = ROWS) -> dict[str, np.ndarray]:
    """A valid release-format file's arrays, of any size (one's own data need not match the registry)."""
    rng = np.random.default_rng(1)
    arrays = {"inputsize": np.int32(input_dim)}
    for split, n in rows.items():
        arrays[f"{split}_data"] = (rng.random((n, input_dim)) < 0.3).astype(np.float32)
        arrays[f"{split}_length"] = np.int32(n)
    return arrays


def one_array(rows: int = 50, input_dim: int = 6) -> np.ndarray:
    """(rows, input_dim) 0/1 with row i's first bits spelling i, so rows can be told apart after shuffling."""
    rng = np.random.default_rng(2)
    data = (rng.random((rows, input_dim)) < 0.5).astype(np.uint8)
    data[:, :6] = (np.arange(rows)[:, None] >> np.arange(6)) & 1
    return data


def row_ids(x: torch.Tensor) -> list[int]:
    return [int(v) for v in (x[:, :6].long() << torch.arange(6)).sum(1)]


def all_splits(dm) -> dict[str, torch.Tensor]:
    return {split: dm.split(split) for split in ("train", "valid", "test")}


# ---- files of one's own -----------------------------------------------------------------------------


def test_own_release_format_file_takes_its_sizes_from_the_file(tmp_path):
    arrays = release_arrays()
    np.savez(tmp_path / "survey.npz", **arrays)
    dm = NPZDataModule(path=tmp_path / "survey.npz")
    assert dm.name == "survey" and dm.input_dim == 7
    for split, data in all_splits(dm).items():
        assert torch.equal(data, torch.from_numpy(arrays[f"{split}_data"]))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_one_array_is_split_by_the_stated_fractions_with_a_fixed_shuffle(tmp_path, suffix):
    data = one_array(50)
    path = tmp_path / f"mine{suffix}"
    np.save(path, data) if suffix == ".npy" else np.savez(path, whatever_name=data)
    splits = all_splits(NPZDataModule(path=path, split=[0.6, 0.2, 0.2]))
    assert [len(x) for x in splits.values()] == [30, 10, 10]
    ids = [i for x in splits.values() for i in row_ids(x)]
    assert sorted(ids) == list(range(50)) and ids != list(range(50))  # every row once, shuffled
    again = all_splits(NPZDataModule(path=path, split=[0.6, 0.2, 0.2], seed=7))  # the run's seed: same split
    assert all(torch.equal(splits[s], again[s]) for s in splits)
    default = all_splits(NPZDataModule(path=path))
    assert [len(x) for x in default.values()] == [40, 5, 5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.full((10, 3), 2.0), "values other than 0 and 1"),
        (np.array([[0.0, np.nan]] * 10), "NaN"),
        (np.zeros((4, 3, 2)), "2-D"),
        (np.zeros((0, 3)), "2-D"),
        (np.array([["a", "b"]] * 10), "non-numeric"),
        (np.zeros((2, 3)), "leave a split empty"),
    ],
)
def test_a_bad_own_array_is_named_with_its_problem(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(DataError, match=message) as error:
        NPZDataModule(path=path).setup()
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("arrays", "split", "message"),
    [
        ({"a": np.zeros((9, 2)), "b": np.zeros((9, 2))}, None, "exactly one"),
        (release_arrays(), [0.8, 0.1, 0.1], "already split"),
        ({**release_arrays(), "train_length": np.int32(29)}, None, "train_data has shape"),
        ({**release_arrays(), "inputsize": np.int32(8)}, None, "expected (30, 8)"),
    ],
)
def test_a_bad_own_npz_is_named_with_its_problem(tmp_path, arrays, split, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        NPZDataModule(path=path, split=split).setup()
    assert str(path) in str(error.value)


def test_a_paper_set_name_with_a_path_checks_the_file_against_the_paper_set(tmp_path):
    np.savez(tmp_path / "copy.npz", **release_arrays())
    with pytest.raises(DataError, match="inputsize is 7, expected 180 for dna"):
        NPZDataModule("dna", path=tmp_path / "copy.npz").setup()


def test_arrays_in_memory_are_validated_like_files():
    rng = np.random.default_rng(0)
    train, valid, test = (torch.from_numpy((rng.random((n, 5)) < 0.5).astype(np.float32)) for n in (20, 6, 4))
    dm = TensorDataModule(train, valid.numpy(), test.bool(), batch_size=8)
    assert dm.input_dim == 5 and torch.equal(dm.split("test"), test)
    assert [
        len(x) for x in all_splits(TensorDataModule.from_array(one_array(40), split=(0.5, 0.25, 0.25))).values()
    ] == [20, 10, 10]
    with pytest.raises(DataError, match="different numbers of columns"):
        TensorDataModule(train, valid[:, :4], test)
    with pytest.raises(DataError, match="valid array has values other than 0 and 1"):
        TensorDataModule(train, valid * 3, test)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.path=/x.npy", "data.split=[0.5,0.5,0.1]"], "summing to 1"),
        (["data.path=/x.npy", "data.split=[0,0.5,0.5]"], "each in (0, 1)"),
        (["data.path=/x.npy", "data.split=[1.5,-0.25,-0.25]"], "each in (0, 1)"),
        (["data.path=/x.npy", "data.split=[0.5,0.5]"], "three fractions"),
        (["data=dna", "data.split=[0.8,0.1,0.1]"], "without data.path"),
    ],
)
def test_split_fractions_are_checked_with_the_other_ranges(overrides, message):
    cfg = compose_train(["data=npz", *overrides] if "data=dna" not in overrides else overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(cfg)


@pytest.mark.parametrize(("overrides", "message"), [([], "data.path"), (["data.name=survey"], "unknown dataset")])
def test_no_dataset_is_a_data_error_not_a_hydra_one(overrides, message):
    """made-train's one-line error and run-dir clean-up need the DataError itself, not Hydra's wrapper."""
    cfg = compose_train(["data=npz", *overrides], with_hydra=False)
    with pytest.raises(DataError, match=message):
        build_datamodule(cfg.data)


def test_valid_split_fractions_pass():
    validate_config(compose_train(["data=npz", "data.path=/x.npy", "data.split=[0.7,0.2,0.1]"]))


# ---- where data is looked for ----------------------------------------------------------------------


@pytest.fixture
def tiny_in_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TINY registered, a valid tiny.npz in a cache dir of its own, and no $MADE_DATA_DIR; returns the file."""
    monkeypatch.setitem(DATASETS, TINY.name, TINY)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("MADE_CACHE_DIR", str(cache))
    monkeypatch.delenv("MADE_DATA_DIR", raising=False)
    arrays = release_arrays(TINY.input_dim, {s: TINY.num_rows(s) for s in ("train", "valid", "test")})
    np.savez(cache / "tiny.npz", **arrays)
    return cache / "tiny.npz"


@pytest.mark.parametrize("how", ["data_dir", "MADE_DATA_DIR"])
@pytest.mark.parametrize("state", ["empty", "missing", "a file"])
def test_a_given_data_dir_never_falls_back_to_the_cache(tiny_in_cache, tmp_path, monkeypatch, how, state):
    data_dir = tmp_path / "mine"
    if state == "empty":
        data_dir.mkdir()
    elif state == "a file":
        data_dir.write_text("not a directory")
    monkeypatch.setenv("MADE_DATA_DIR", str(data_dir) if how == "MADE_DATA_DIR" else "")
    with pytest.raises(DataError) as error:
        resolve_dataset("tiny", data_dir=data_dir if how == "data_dir" else None)
    assert str(data_dir) in str(error.value) and "cache" in str(error.value)
    monkeypatch.delenv("MADE_DATA_DIR")
    assert resolve_dataset("tiny") == tiny_in_cache  # with no directory given, the cache


@pytest.mark.parametrize("problem", ["directory", "symlink loop", "unreadable"])
@pytest.mark.parametrize("where", ["data_dir", "path"])
def test_an_unusable_data_path_is_named_with_its_problem(tiny_in_cache, tmp_path, monkeypatch, problem, where):
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    target = data_dir / "tiny.npz"
    if problem == "directory":
        target.mkdir()
    elif problem == "symlink loop":
        target.symlink_to(target)
    else:
        target.write_bytes(tiny_in_cache.read_bytes())
        if os.geteuid() == 0:  # root reads through chmod 000, so make the open fail as it would for a user

            def denied(path, *args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))

            monkeypatch.setattr(files, "open", denied, raising=False)
        else:
            target.chmod(0)
    expected = {"directory": "is a directory", "symlink loop": "symlink loop", "unreadable": "permission denied"}
    module = NPZDataModule("tiny", data_dir=data_dir) if where == "data_dir" else NPZDataModule(path=target)
    with pytest.raises(DataError, match=expected[problem]) as error:
        module.setup()
    assert str(target) in str(error.value)


# ---- end to end through the CLI ------------------------------------------------------------------------

TINY_RUN = ["model.hidden_sizes=[16]", "trainer.max_epochs=2", "logger=csv", "~callbacks.rich_progress_bar"]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory) -> Path:
    """made-train on one .npy of one's own, given by a path relative to the working directory."""
    root = tmp_path_factory.mktemp("own")
    np.save(root / "votes.npy", one_array(200, 12))
    result = cli(
        "made-train",
        ["data=npz", "data.path=votes.npy", "data.split=[0.7,0.15,0.15]", "module.num_samples=0", *TINY_RUN],
        root / "logs",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(root / "logs")
    return run_dir


@pytest.mark.slow
def test_own_data_trains_evaluates_and_samples(own_run, tmp_path):
    results = json.loads((own_run / "results.json").read_text())
    assert results["config"]["data"]["path"] == str(own_run.parents[3] / "votes.npy")
    saved = OmegaConf.load(own_run / ".hydra" / "config.yaml")
    assert saved.data.path == str(own_run.parents[3] / "votes.npy")  # absolute, so made-eval works anywhere
    assert 0 < results["metrics"]["test/nll"] < 12 * np.log(2) + 1
    assert results["stopped_by"] == "max_epochs"  # 2 epochs: before early stopping could fire
    result = cli("made-eval", [str(own_run)], tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((own_run / "eval_mixture.json").read_text())["metrics"]["test/nll"]
    assert evaluated == pytest.approx(results["metrics"]["test/nll"], rel=1e-9)
    result = cli("made-sample", [str(own_run), "--num-samples", "9"], tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (own_run / "samples_seed0_n9.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report([own_run], tmp_path / "report")  # named after the file; 2 epochs is short of the paper's protocol
    (row,) = csv.DictReader((tmp_path / "report" / "report.csv").open())
    assert (row["dataset"], row["short_of_protocol"]) == ("votes", "trainer.max_epochs=2 (1 of 1 runs)")


@pytest.mark.slow
def test_a_corrupt_own_file_is_one_line_and_no_run_dir(tmp_path):
    path = tmp_path / "mine.npy"
    np.save(path, np.full((20, 3), 0.5))
    result = cli("made-train", ["data=npz", f"data.path={path}", *TINY_RUN], tmp_path / "logs")
    assert_one_line_error(result, str(path), "values other than 0 and 1")
    assert run_dirs(tmp_path / "logs") == []


def test_the_readme_python_example_trains_on_an_array(tmp_path):
    """The README's "data you already hold" example, shrunk: from_array, MADEModule, fit, test."""
    from functools import partial

    import pytorch_lightning as pl

    from made_exp.core.ensemble import Mixture
    from made_exp.core.made import MADE
    from made_exp.core.masks import MaskSchedule
    from made_exp.lightning.module import MADEModule

    x = one_array(200, 8)
    data = TensorDataModule.from_array(x, split=(0.8, 0.1, 0.1), batch_size=20)
    module = MADEModule(
        MADE(data.input_dim, [16]),
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        masks=MaskSchedule(),
        ensemble=Mixture(),
        num_samples=0,
    )
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert 0 < module.test_results["test/nll"] < 8 * np.log(2) + 1


def test_relative_data_paths_become_absolute_in_the_run_and_its_saved_config(tmp_path, monkeypatch):
    """made-eval may run from anywhere: the run records the paths it read, absolute; an interpolation
    (``${oc.env:MADE_DATA_DIR,null}``) stays one."""
    monkeypatch.chdir(tmp_path)
    cfg = compose_train(["data=npz", "data.path=mine/votes.npy"], with_hydra=False)
    saved = tmp_path / "run" / ".hydra" / "config.yaml"
    saved.parent.mkdir(parents=True)
    OmegaConf.save(cfg, saved)
    absolute_data_paths(cfg, saved)
    for config in (cfg, OmegaConf.load(saved)):
        assert config.data.path == str(tmp_path / "mine" / "votes.npy")
    assert OmegaConf.is_interpolation(OmegaConf.load(saved).data, "data_dir")
    cfg = compose_train(["data=dna", "data.data_dir=data"], with_hydra=False)
    absolute_data_paths(cfg, tmp_path / "no_run" / "config.yaml")  # outside a Hydra run: the config only
    assert cfg.data.data_dir == str(tmp_path / "data") and cfg.data.path is None
