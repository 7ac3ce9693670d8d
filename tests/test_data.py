"""Tests for made_exp.data: registry files, validation, downloads, batching, DataModules."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from conftest import compose_train
from made_exp.data.batches import TensorBatches
from made_exp.data.datamodules import MNISTDataModule, NPZDataModule, SyntheticDataModule
from made_exp.data.files import DATASETS, DataError, DatasetInfo, load_npz_splits, resolve_dataset

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
PRESENT = ["binarized_mnist", "adult", "connect4", "dna", "mushrooms", "nips", "ocr_letters"]
TINY = DatasetInfo("tiny", input_dim=4, num_train=6, num_valid=3, num_test=2, url="http://127.0.0.1:9/tiny.npz")


def release_arrays(info: DatasetInfo = TINY, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid release-format arrays for ``info``."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"inputsize": np.int32(info.input_dim)}
    for split in ("train", "valid", "test"):
        rows = info.num_rows(split)
        arrays[f"{split}_data"] = rng.integers(0, 2, size=(rows, info.input_dim)).astype(np.float32)
        arrays[f"{split}_length"] = np.int32(rows)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as f:  # a file object, so numpy keeps the exact name
        np.savez_compressed(f, **arrays)
    return path


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> DatasetInfo:
    """TINY registered, the cache in tmp_path/cache, and no $MADE_DATA_DIR."""
    monkeypatch.setitem(DATASETS, TINY.name, TINY)
    monkeypatch.setenv("MADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MADE_DATA_DIR", raising=False)
    return TINY


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/served: yields (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the real files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESENT)
def test_present_datasets_load(name: str) -> None:
    if not os.environ.get("MADE_DATA_DIR"):
        pytest.skip("MADE_DATA_DIR is not set")
    info = DATASETS[name]
    dm = NPZDataModule(name, download=False)
    assert dm.input_dim == info.input_dim
    dm.setup()
    for split in ("train", "valid", "test"):
        data = dm.split(split)
        assert data.shape == (info.num_rows(split), info.input_dim)
        assert data.dtype == torch.float32
        assert ((data == 0) | (data == 1)).all()


def test_registry_covers_the_paper() -> None:
    assert set(DATASETS) == {*PRESENT, "rcv1", "web"}
    assert (DATASETS["rcv1"].input_dim, DATASETS["rcv1"].num_test) == (150, 150000)
    assert (DATASETS["web"].input_dim, DATASETS["web"].num_train) == (300, 14000)
    assert {name for name, info in DATASETS.items() if info.sha256} == {"dna", "mushrooms", "nips"}


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="dna"):
        NPZDataModule("mnist")


@pytest.mark.parametrize("path", sorted(set(CONF_DIR.glob("*.yaml")) - {CONF_DIR / "npz.yaml"}), ids=lambda p: p.stem)
def test_config_instantiates(path: Path) -> None:
    cfg = compose_train([f"data={path.stem}", "seeds.data=3"], with_hydra=False)
    dm = instantiate(cfg.data)
    assert dm.seed == 3
    assert dm.input_dim > 0


# ---- validation ---------------------------------------------------------------------------------


def test_missing_file_names_where_to_put_it(tiny: DatasetInfo, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tiny.npz") as err:
        resolve_dataset("tiny", data_dir=tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "$MADE_DATA_DIR/tiny.npz" in str(err.value)
    assert tiny.url in str(err.value)


def test_resolve_prefers_data_dir(tiny: DatasetInfo, tmp_path: Path) -> None:
    path = write_npz(tmp_path / "tiny.npz", release_arrays())
    assert resolve_dataset("tiny", data_dir=tmp_path, download=False) == path
    splits = load_npz_splits(path, tiny)
    assert splits["valid"].shape == (3, 4)
    assert torch.equal(splits["test"], torch.from_numpy(release_arrays()["test_data"]))


def _corrupt(arrays: dict[str, np.ndarray], key: str, value: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("valid_data", None, "missing keys"),
        ("train_data", np.zeros((6, 5), np.float32), "shape"),
        ("train_data", np.zeros((5, 4), np.float32), "shape"),
        ("test_data", np.zeros((0, 4), np.float32), "empty"),
        ("test_length", np.int32(7), "test_length"),
        ("inputsize", np.int32(5), "inputsize"),
        ("train_data", np.full((6, 4), 2, np.float32), "0 and 1"),
        ("valid_data", np.array([[0, 1, np.nan, 0]] * 3, np.float32), "NaN"),
        ("valid_data", np.array([[0, 1, np.inf, 0]] * 3, np.float32), "inf"),
    ],
)
def test_invalid_content_raises(tmp_path: Path, key: str, value: np.ndarray | None, message: str) -> None:
    path = write_npz(tmp_path / "tiny.npz", _corrupt(release_arrays(), key, value))
    with pytest.raises(DataError, match=message) as err:
        load_npz_splits(path, TINY)
    assert str(path) in str(err.value)


def test_truncated_file_raises(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "tiny.npz", release_arrays())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_npz_splits(path, TINY)


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_npz_splits(tmp_path / "absent.npz", TINY)


# ---- downloads ----------------------------------------------------------------------------------


def test_download_validates_and_caches(tiny: DatasetInfo, tmp_path: Path, server: tuple[str, Path]) -> None:
    base, served = server
    write_npz(served / "copy.npz", release_arrays())
    path = resolve_dataset("tiny", url=f"{base}/copy.npz")
    assert path == tmp_path / "cache" / "tiny.npz"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.npz"]
    assert load_npz_splits(path, tiny)["train"].shape == (6, 4)
    # Found in the cache the second time: the server is not asked again.
    assert resolve_dataset("tiny", url="http://127.0.0.1:9/never.npz") == path


def test_download_checks_sha256(monkeypatch: pytest.MonkeyPatch, tiny: DatasetInfo, server: tuple[str, Path]) -> None:
    base, served = server
    payload = write_npz(served / "tiny.npz", release_arrays()).read_bytes()
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo(**{**vars(tiny), "sha256": "0" * 64}))
    with pytest.raises(DataError, match="SHA-256"):
        resolve_dataset("tiny", url=f"{base}/tiny.npz")
    assert list(Path(os.environ["MADE_CACHE_DIR"]).iterdir()) == []
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo(**{**vars(tiny), "sha256": hashlib.sha256(payload).hexdigest()}))
    assert resolve_dataset("tiny", url=f"{base}/tiny.npz").read_bytes() == payload


@pytest.mark.parametrize("bad", ["truncated", "wrong_shape", "not_found"])
def test_bad_download_leaves_nothing(tiny: DatasetInfo, server: tuple[str, Path], bad: str) -> None:
    base, served = server
    if bad == "truncated":
        data = write_npz(served / "tiny.npz", release_arrays()).read_bytes()
        (served / "tiny.npz").write_bytes(data[:100])
    elif bad == "wrong_shape":
        write_npz(served / "tiny.npz", _corrupt(release_arrays(), "train_data", np.zeros((6, 3), np.float32)))
    with pytest.raises(DataError, match="tiny.npz"):
        resolve_dataset("tiny", url=f"{base}/tiny.npz")
    assert list(Path(os.environ["MADE_CACHE_DIR"]).iterdir()) == []


def test_unreachable_url_raises(tiny: DatasetInfo) -> None:
    url = f"http://127.0.0.1:{closed_port()}/tiny.npz"
    with pytest.raises(DataError, match="download failed") as err:
        NPZDataModule("tiny", url=url).setup()
    assert "$MADE_DATA_DIR/tiny.npz" in str(err.value)
    assert list(Path(os.environ["MADE_CACHE_DIR"]).iterdir()) == []


# ---- batching -----------------------------------------------------------------------------------


def row_ids(batches: TensorBatches) -> list[int]:
    """The rows a pass visits, read back from column 0 of data built as arange."""
    return [int(v) for batch in batches for v in batch[:, 0]]


def indexed(num_rows: int) -> torch.Tensor:
    return torch.arange(num_rows, dtype=torch.float32)[:, None].repeat(1, 3)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_row_once(shuffle: bool) -> None:
    batches = TensorBatches(indexed(103), 10, shuffle, torch.Generator().manual_seed(0))
    shapes = [tuple(batch.shape) for batch in batches]
    assert len(shapes) == len(batches) == 11
    assert shapes[-1] == (3, 3)
    assert sorted(row_ids(batches)) == list(range(103))


def test_shuffle_is_seeded() -> None:
    def epochs(seed: int) -> list[list[int]]:
        batches = TensorBatches(indexed(50), 7, True, torch.Generator().manual_seed(seed))
        return [row_ids(batches) for _ in range(2)]

    assert epochs(1) == epochs(1)
    assert epochs(1) != epochs(2)
    first, second = epochs(1)
    assert first != second


@pytest.mark.parametrize(("num_rows", "world_size"), [(103, 4), (7, 3), (2, 3)])
def test_eval_shards_cover_each_row_once(num_rows: int, world_size: int) -> None:
    shards = [row_ids(TensorBatches(indexed(num_rows), 4, False, None, rank, world_size)) for rank in range(world_size)]
    assert sorted(itertools.chain(*shards)) == list(range(num_rows))
    assert all(shard == sorted(shard) for shard in shards)


def test_train_shards_disjoint_and_equal() -> None:
    world_size = 3
    shards = [
        row_ids(TensorBatches(indexed(103), 8, True, torch.Generator().manual_seed(5), rank, world_size))
        for rank in range(world_size)
    ]
    assert [len(shard) for shard in shards] == [34] * world_size
    assert len(set(itertools.chain(*shards))) == 3 * 34


def test_binarize_draws_independent_bits_per_rank() -> None:
    data = torch.full((400, 50), 0.5)
    batches = [
        next(iter(TensorBatches(data, 400, True, torch.Generator().manual_seed(0), rank, 2, True))) for rank in range(2)
    ]
    assert all(((b == 0) | (b == 1)).all() for b in batches)
    assert not torch.equal(batches[0][:200], batches[1][:200])
    assert abs(batches[0].mean().item() - 0.5) < 0.02


# ---- DataModules --------------------------------------------------------------------------------


def train_minibatches(dm) -> list[torch.Tensor]:
    """One epoch's training minibatches, ungrouped."""
    return [batch for group in dm.train_dataloader() for batch in group]


def test_grouped_minibatches_are_the_same_minibatches() -> None:
    one, grouped = SyntheticDataModule(seed=2), SyntheticDataModule(seed=2, minibatches_per_step=3)
    groups = list(grouped.train_dataloader())
    assert len(groups) == len(grouped.train_dataloader()) == 17 and [len(g) for g in groups[-2:]] == [3, 2]
    flattened = [batch for group in groups for batch in group]
    assert all(torch.equal(a, b) for a, b in zip(train_minibatches(one), flattened, strict=True))


def test_state_dict_round_trip_reproduces_order() -> None:
    dm = SyntheticDataModule(seed=4)
    first = [b.clone() for b in train_minibatches(dm)]
    state = dm.state_dict()
    second = train_minibatches(dm)
    resumed = SyntheticDataModule(seed=4)
    resumed.load_state_dict(state)
    again = train_minibatches(resumed)
    assert len(again) == len(second) == 50
    assert all(torch.equal(a, b) for a, b in zip(again, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_datamodule_shards_by_trainer_rank() -> None:
    dm = SyntheticDataModule(num_valid=1001, eval_batch_size=100)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    assert torch.equal(torch.cat(list(dm.val_dataloader())), dm.split("valid")[500:])
    assert sum(len(b) for b in train_minibatches(dm)) == 2500


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx format: magic (0x08 = uint8, then the rank), big-endian int32 dims, raw bytes.
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_dynamic_binarization(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 30), ("t10k", 12)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(count, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=count))
    dm = MNISTDataModule(root=tmp_path, batch_size=8, num_valid=10)
    assert dm.input_dim == 784
    dm.setup()
    assert [tuple(dm.split(s).shape) for s in ("train", "valid", "test")] == [(20, 784), (10, 784), (12, 784)]
    assert dm.split("train").max() <= 1 and not ((dm.split("train") == 0) | (dm.split("train") == 1)).all()
    batches = train_minibatches(dm)
    assert [len(b) for b in batches] == [8, 8, 4]
    assert all(((b == 0) | (b == 1)).all() for b in batches)
    assert not torch.equal(torch.cat(batches), torch.cat(train_minibatches(dm)))
    other_seed = MNISTDataModule(root=tmp_path, seed=9, num_valid=10)
    assert torch.equal(other_seed.split("test"), dm.split("test"))
    assert ((dm.split("valid") == 0) | (dm.split("valid") == 1)).all()


def test_mnist_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MNIST"):
        MNISTDataModule(root=tmp_path).setup()


def brute_force_log_probs(dm: SyntheticDataModule) -> dict[tuple[int, ...], float]:
    """log p(x) for every state, straight from the mixture's definition."""
    weights, probs = dm.log_weights.exp().numpy(), dm.probs.numpy()
    table = {}
    for state in itertools.product((0, 1), repeat=dm.input_dim):
        x = np.array(state)
        likelihoods = [np.prod(np.where(x == 1, p, 1 - p)) for p in probs]
        table[state] = math.log(float(np.dot(weights, likelihoods)))
    return table


def test_synthetic_entropy_is_exact() -> None:
    dm = SyntheticDataModule(input_dim=6, num_components=3, seed=2)
    table = brute_force_log_probs(dm)
    assert dm.entropy() == pytest.approx(-sum(math.exp(lp) * lp for lp in table.values()), rel=1e-12)
    states = torch.tensor(list(table), dtype=torch.float32)
    log_p = dm.true_log_prob(states)
    assert log_p.shape == (64,)
    assert torch.allclose(log_p, torch.tensor(list(table.values()), dtype=torch.float64), atol=1e-12)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_synthetic_test_nll_near_entropy() -> None:
    dm = SyntheticDataModule()
    nll = -dm.true_log_prob(dm.split("test"))
    assert dm.split("test").shape == (1000, 10)
    std_error = nll.std().item() / math.sqrt(len(nll))
    assert abs(nll.mean().item() - dm.entropy()) < 4 * std_error


def test_synthetic_rejects_large_dim() -> None:
    with pytest.raises(ValueError, match="input_dim"):
        SyntheticDataModule(input_dim=21)


def test_local_copies_match_upstream_sha256() -> None:
    if not os.environ.get("MADE_DATA_DIR"):
        pytest.skip("MADE_DATA_DIR is not set")
    for name in ("dna", "mushrooms", "nips"):
        path = resolve_dataset(name, download=False)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == DATASETS[name].sha256


class RecordingModule(pl.LightningModule):
    """Fits one logit per variable and records the first row of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(10))
        self.seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, minibatches: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (batch,) = minibatches
        self.seen.append((self.current_epoch, batch[0].clone()))
        return torch.nn.functional.binary_cross_entropy_with_logits(self.logits.expand_as(batch), batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(max_epochs: int, root: Path, ckpt_path: Path | None = None) -> RecordingModule:
    module = RecordingModule()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=SyntheticDataModule(num_train=300, seed=1), ckpt_path=ckpt_path)
    return module


def test_lightning_resume_sees_the_same_batches(tmp_path: Path) -> None:
    straight = _fit(2, tmp_path / "straight")
    _fit(1, tmp_path / "first")
    (ckpt,) = (tmp_path / "first").rglob("*.ckpt")
    resumed = _fit(2, tmp_path / "resumed", ckpt_path=ckpt)
    expected = [row for epoch, row in straight.seen if epoch == 1]
    assert len(resumed.seen) == len(expected) == 3
    assert all(torch.equal(row, other) for (_, row), other in zip(resumed.seen, expected, strict=True))
