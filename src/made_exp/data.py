"""Binarized datasets for MADE as resident tensors, and the Lightning DataModules that serve them.

The benchmark files follow the original MADE release (Germain et al., 2015): an ``.npz`` holding
``inputsize``, ``{train,valid,test}_data`` (float32 0/1, shape (N, D)) and ``{train,valid,test}_length``.
A file is looked up in ``data_dir`` (else ``$MADE_DATA_DIR``) and then the cache (``$MADE_CACHE_DIR``,
default ``~/.cache/made_exp``), downloaded into the cache when absent, and validated before use.
Batches are index slices of tensors held in memory: datasets this small gain nothing from worker
processes or per-example collation.

Example:
    >>> dm = NPZDataModule("dna", download=False)
    >>> dm.input_dim  # known before setup(), so the model can be built first
    180
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision.datasets import MNIST

from made_exp.errors import UserError

__all__ = [
    "DATASETS",
    "SPLITS",
    "BinarizedDataModule",
    "DataError",
    "DatasetInfo",
    "MNISTDataModule",
    "NPZDataModule",
    "SyntheticDataModule",
    "TensorBatches",
    "cache_dir",
    "dataset_info",
    "load_npz_splits",
    "resolve_dataset",
]

SPLITS = ("train", "valid", "test")
_NPZ_KEYS = ("inputsize", *(f"{split}_data" for split in SPLITS), *(f"{split}_length" for split in SPLITS))
_DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; a dead mirror fails fast instead of hanging a job
_REPO_URL = "https://github.com/mgermain/MADE/raw/master/datasets/{}.npz"
_RELEASE_URL = "https://github.com/mgermain/MADE/releases/download/ICML2015/{}.npz"
# Independent of the run's seed, so every run is scored on the same bits of MNIST valid/test.
_EVAL_BINARIZATION_SEED = 2015
_MAX_ENUMERABLE_DIM = 20  # 2^20 states: exact entropy in about a second


class DataError(UserError):
    """A dataset file is missing, unreadable or not in the MADE release format."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a MADE ``.npz`` must hold: ``input_dim`` columns and the row count of each split.

    ``sha256`` is checked on download only where the upstream bytes are known; every file is
    also validated by content.
    """

    name: str
    input_dim: int
    num_train: int
    num_valid: int
    num_test: int
    url: str
    sha256: str | None = None

    def num_rows(self, split: str) -> int:
        """Rows expected in ``split`` (one of ``SPLITS``)."""
        return {"train": self.num_train, "valid": self.num_valid, "test": self.num_test}[split]


# SHA-256 of the upstream bytes, known only for the files byte-identical to the MADE repository.
_UPSTREAM_SHA256 = {
    "dna": "df2d2e7ce1469edfead15e41024e108d64f1b4633cfecfc40ef7107cc22c895c",
    "mushrooms": "4130f1defa3033911fe746a3ab1bb22b0c812bb29e68391a0fbc2d65bab6ae74",
    "nips": "dbf3b659a49670957c0851971bd51ff952a657f010581d12f6c1e2dca8907b20",
}
# The binarized MNIST asset is a re-save of the Salakhutdinov & Murray (2008) binarization whose bytes
# vary with compression, so like adult, connect4 and ocr_letters it is accepted on content alone.
DATASETS: dict[str, DatasetInfo] = {
    name: DatasetInfo(name, input_dim, *sizes, url_template.format(name), _UPSTREAM_SHA256.get(name))
    for name, input_dim, sizes, url_template in (
        ("binarized_mnist", 784, (50000, 10000, 10000), _RELEASE_URL),
        ("adult", 123, (5000, 1414, 26147), _REPO_URL),
        ("connect4", 126, (16000, 4000, 47557), _REPO_URL),
        ("dna", 180, (1400, 600, 1186), _REPO_URL),
        ("mushrooms", 112, (2000, 500, 5624), _REPO_URL),
        ("nips", 500, (400, 100, 1240), _REPO_URL),
        ("ocr_letters", 128, (32152, 10000, 10000), _REPO_URL),
        ("rcv1", 150, (40000, 10000, 150000), _RELEASE_URL),
        ("web", 300, (14000, 3188, 32561), _REPO_URL),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """Registry entry for ``name``; ValueError naming the allowed datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def cache_dir() -> Path:
    """Where downloads go: ``$MADE_CACHE_DIR``, else ``~/.cache/made_exp``."""
    return Path(os.environ.get("MADE_CACHE_DIR") or Path.home() / ".cache" / "made_exp").expanduser()


def resolve_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, url: str | None = None
) -> Path:
    """Path to ``<name>.npz`` in ``data_dir`` (else ``$MADE_DATA_DIR``) or the cache, downloading it there if absent."""
    info = dataset_info(name)
    filename = f"{name}.npz"
    primary = data_dir if data_dir is not None else os.environ.get("MADE_DATA_DIR")
    search = ([Path(primary).expanduser()] if primary else []) + [cache_dir()]
    for directory in search:
        if (directory / filename).is_file():
            return directory / filename
    url = url or info.url
    if not download:
        raise DataError(
            f"{filename} not found in {', '.join(map(str, search))}; "
            f"put it at $MADE_DATA_DIR/{filename} (download it from {url})"
        )
    target = search[-1] / filename
    _download(url, target, info)
    return target


def _download(url: str, target: Path, info: DatasetInfo) -> None:
    """Fetch ``url`` to ``target`` atomically: nothing appears at ``target`` unless it validates."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so os.replace is a rename and never leaves a half-written file.
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, target)
        if info.sha256 is not None and digest != info.sha256:
            raise DataError(f"{url}: SHA-256 {digest} does not match the expected {info.sha256}")
        _check_splits(_read_npz(temp, source=url), info, source=url)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _fetch(url: str, out: BinaryIO, target: Path) -> str:
    """Stream ``url`` into ``out``; returns the SHA-256 hex digest of the bytes written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
        raise DataError(
            f"{url}: download failed ({err}); put the file at $MADE_DATA_DIR/{target.name} or {target}"
        ) from err
    return digest.hexdigest()


def _read_npz(path: Path, source: str) -> dict[str, np.ndarray]:
    """All release-format arrays of the ``.npz`` at ``path``; ``source`` names it in errors."""
    try:
        with warnings.catch_warnings():
            # The UCI files were written by Python 2; numpy warns that it re-parsed their headers.
            warnings.filterwarnings("ignore", message=".*Python 2.*", category=UserWarning)
            npz = np.load(path, allow_pickle=False, encoding="latin1")
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataError(f"{source}: holds a single array, not an .npz archive")
            with npz:
                missing = [key for key in _NPZ_KEYS if key not in npz.files]
                if missing:
                    raise DataError(f"{source}: missing keys {missing}")
                return {key: npz[key] for key in _NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{source}: unreadable .npz, corrupt or truncated ({err})") from err


def _scalar(arrays: dict[str, np.ndarray], key: str, source: str) -> int:
    value = arrays[key]
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise DataError(f"{source}: {key} should be one integer, got {value.dtype} of shape {value.shape}")
    number = value.item()
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{source}: {key} should be one integer, got {number}")
    return int(number)


def _check_splits(arrays: dict[str, np.ndarray], info: DatasetInfo, source: str) -> dict[str, Tensor]:
    """Validate release-format arrays against ``info``; returns float32 (N, D) tensors per split."""
    inputsize = _scalar(arrays, "inputsize", source)
    if inputsize != info.input_dim:
        raise DataError(f"{source}: inputsize is {inputsize}, expected {info.input_dim} for {info.name}")
    splits = {}
    for split in SPLITS:
        data, where = arrays[f"{split}_data"], f"{source}: {split}_data"
        expected = (info.num_rows(split), info.input_dim)
        if data.size == 0:
            raise DataError(f"{where} is empty")
        if data.shape != expected:
            raise DataError(f"{where} has shape {data.shape}, expected {expected}")
        length = _scalar(arrays, f"{split}_length", source)
        if length != expected[0]:
            raise DataError(f"{source}: {split}_length is {length}, expected {expected[0]}")
        if data.dtype.kind not in "biuf":
            raise DataError(f"{where} has non-numeric dtype {data.dtype}")
        if not np.isfinite(data).all():
            raise DataError(f"{where} contains NaN or inf")
        if not ((data == 0) | (data == 1)).all():
            raise DataError(f"{where} has values other than 0 and 1")
        splits[split] = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return splits


def load_npz_splits(path: str | Path, info: DatasetInfo) -> dict[str, Tensor]:
    """Validated splits of a release-format ``.npz``: ``{"train", "valid", "test"}`` -> (N, D) float32 in {0, 1}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return _check_splits(_read_npz(path, source=str(path)), info, source=str(path))


class TensorBatches:
    """(B, D) batches sliced from a resident (N, D) tensor, sharded over ``world_size`` ranks.

    Training (``shuffle=True``): every rank draws the same permutation (ranks must pass identically
    seeded generators) and takes its own ``N // world_size`` rows of it, so shards are disjoint and
    equal in size, which keeps DDP ranks stepping together. Evaluation (``shuffle=False``): rank ``r``
    takes the contiguous rows ``[r N // W, (r + 1) N // W)``, so the ranks score every row exactly once.
    With ``binarize``, each batch is drawn afresh as Bernoulli(data) (dynamic binarization).
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        binarize: bool = False,
    ) -> None:
        if data.dim() != 2:
            raise ValueError(f"data should be (N, D), got shape {tuple(data.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size should be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank should be in [0, {world_size}), got {rank}")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator, self.rank, self.world_size, self.binarize = generator, rank, world_size, binarize

    def _eval_rows(self) -> range:
        num_rows = len(self.data)
        return range(self.rank * num_rows // self.world_size, (self.rank + 1) * num_rows // self.world_size)

    def _num_rows(self) -> int:
        return len(self.data) // self.world_size if self.shuffle else len(self._eval_rows())

    def __len__(self) -> int:
        return -(-self._num_rows() // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            per_rank = self._num_rows()
            order = torch.randperm(len(self.data), generator=self.generator)
            shard = order[self.rank * per_rank : (self.rank + 1) * per_rank]
            batches = (self.data[shard[i : i + self.batch_size]] for i in range(0, per_rank, self.batch_size))
        else:
            rows = self._eval_rows()
            starts = range(rows.start, rows.stop, self.batch_size)
            batches = (self.data[i : min(i + self.batch_size, rows.stop)] for i in starts)
        for batch in batches:
            yield self._binarized(batch) if self.binarize else batch

    def _binarized(self, batch: Tensor) -> Tensor:
        # Noise for every rank's batch, so all ranks consume their generators in step while each
        # rank's bits stay independent of the others'.
        noise = torch.rand((self.world_size, *batch.shape), generator=self.generator)[self.rank]
        return (noise < batch).to(batch.dtype)


class GroupedBatches:
    """Groups of ``size`` consecutive batches, as lists: the module takes one optimiser step per
    batch, so grouping changes only how often Lightning's per-step machinery runs, not the minibatches."""

    def __init__(self, batches: TensorBatches, size: int) -> None:
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.size)

    def __iter__(self) -> Iterator[list[Tensor]]:
        group = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = []
        if group:
            yield group


class BinarizedDataModule(pl.LightningDataModule):
    """Resident (N, D) train/valid/test tensors served as ``TensorBatches``; subclasses implement ``_load``.

    The generator that orders training batches is seeded with ``seed`` and saved in checkpoints
    (``state_dict``), so a resumed run sees the same batches it would have seen.
    """

    dynamic_binarization = False

    def __init__(
        self, input_dim: int, batch_size: int, eval_batch_size: int, seed: int, minibatches_per_step: int = 1
    ) -> None:
        super().__init__()
        if minibatches_per_step < 1:
            raise ValueError(f"minibatches_per_step should be positive, got {minibatches_per_step}")
        self._input_dim = input_dim
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.minibatches_per_step = minibatches_per_step
        self.generator = torch.Generator().manual_seed(seed)
        self.splits: dict[str, Tensor] | None = None

    @property
    def input_dim(self) -> int:
        """D, the number of binary variables per example."""
        return self._input_dim

    def _load(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load all splits once; later calls are no-ops."""
        if self.splits is None:
            self.splits = self._load()

    def split(self, name: str) -> Tensor:
        """The whole split ``name`` as an (N, D) float32 tensor, loading the data if needed."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        self.setup()
        return self.splits[name]

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> TensorBatches:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return TensorBatches(
            self.split(split),
            batch_size,
            shuffle,
            self.generator if shuffle else None,
            rank,
            world_size,
            binarize=shuffle and self.dynamic_binarization,
        )

    def train_dataloader(self) -> GroupedBatches:
        """Lists of ``minibatches_per_step`` consecutive (B, D) minibatches of one epoch's permutation."""
        return GroupedBatches(self._batches("train", self.batch_size, shuffle=True), self.minibatches_per_step)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("valid", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.set_state(state_dict["generator_state"])


class NPZDataModule(BinarizedDataModule):
    """One of the ``DATASETS`` (binarized MNIST or a UCI set) from its release-format ``.npz``."""

    def __init__(
        self,
        name: str,
        data_dir: str | Path | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 2000,
        seed: int = 0,
        download: bool = True,
        url: str | None = None,
        minibatches_per_step: int = 1,
    ) -> None:
        info = dataset_info(name)
        super().__init__(info.input_dim, batch_size, eval_batch_size, seed, minibatches_per_step)
        self.info, self.data_dir, self.download, self.url = info, data_dir, download, url

    def _load(self) -> dict[str, Tensor]:
        return load_npz_splits(resolve_dataset(self.info.name, self.data_dir, self.download, self.url), self.info)


class MNISTDataModule(BinarizedDataModule):
    """Grey-level MNIST, dynamically binarized: each training batch is drawn afresh as Bernoulli(pixels).

    ``split("train")`` holds pixel intensities in [0, 1]; valid (the last ``num_valid`` training
    images) and test are binarized once with a fixed seed, so evaluation is deterministic.
    """

    dynamic_binarization = True

    def __init__(
        self,
        root: str | Path | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 2000,
        seed: int = 0,
        num_valid: int = 10000,
        download: bool = False,
        minibatches_per_step: int = 1,
    ) -> None:
        super().__init__(784, batch_size, eval_batch_size, seed, minibatches_per_step)
        if root is None:
            root = Path(os.environ.get("MADE_DATA_DIR") or cache_dir()) / "mnist"
        self.root, self.num_valid, self.download = Path(root), num_valid, download

    def _load(self) -> dict[str, Tensor]:
        try:
            train, test = (MNIST(self.root, train=train, download=self.download) for train in (True, False))
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"{self.root}: MNIST not found ({err}); put the idx files in {self.root / 'MNIST' / 'raw'} "
                "or pass download=True"
            ) from err
        train_pixels, test_pixels = (images.data.flatten(1).float() / 255 for images in (train, test))
        if not 0 < self.num_valid < len(train_pixels):
            raise ValueError(f"num_valid should be in (0, {len(train_pixels)}), got {self.num_valid}")
        num_train = len(train_pixels) - self.num_valid
        generator = torch.Generator().manual_seed(_EVAL_BINARIZATION_SEED)
        return {
            "train": train_pixels[:num_train],
            "valid": torch.bernoulli(train_pixels[num_train:], generator=generator),
            "test": torch.bernoulli(test_pixels, generator=generator),
        }


class SyntheticDataModule(BinarizedDataModule):
    """Samples of a random mixture of ``num_components`` product-Bernoulli components over {0, 1}^D.

    The distribution is known exactly: ``entropy()`` is the lowest expected test NLL any model can
    reach, the floor a correct MADE should approach on this data.
    """

    def __init__(
        self,
        input_dim: int = 10,
        num_components: int = 5,
        num_train: int = 5000,
        num_valid: int = 1000,
        num_test: int = 1000,
        seed: int = 0,
        batch_size: int = 100,
        eval_batch_size: int = 2000,
        minibatches_per_step: int = 1,
    ) -> None:
        if not 1 <= input_dim <= _MAX_ENUMERABLE_DIM:
            raise ValueError(f"input_dim should be in [1, {_MAX_ENUMERABLE_DIM}] to enumerate states, got {input_dim}")
        super().__init__(input_dim, batch_size, eval_batch_size, seed, minibatches_per_step)
        generator = torch.Generator().manual_seed(seed)
        self.log_weights = torch.log_softmax(torch.randn(num_components, generator=generator, dtype=torch.float64), 0)
        # Scaled logits push many means towards 0 or 1, giving the data structure beyond its marginals.
        self.probs = torch.sigmoid(2 * torch.randn(num_components, input_dim, generator=generator, dtype=torch.float64))
        sizes = (num_train, num_valid, num_test)
        samples = self._sample(sum(sizes), generator).split(sizes)
        self._samples = dict(zip(SPLITS, samples, strict=True))

    def _sample(self, num_samples: int, generator: torch.Generator) -> Tensor:
        components = torch.multinomial(self.log_weights.exp(), num_samples, replacement=True, generator=generator)
        return torch.bernoulli(self.probs[components], generator=generator).float()

    def _load(self) -> dict[str, Tensor]:
        return self._samples

    def true_log_prob(self, x: Tensor) -> Tensor:
        """log p(x) for x: (N, D) in {0, 1} -> (N,) float64 nats."""
        x = x.to(torch.float64)
        log_components = x @ torch.log(self.probs).T + (1 - x) @ torch.log1p(-self.probs).T  # (N, K)
        return torch.logsumexp(log_components + self.log_weights, dim=1)

    def entropy(self) -> float:
        """H(p) = -sum_x p(x) log p(x) in nats, by enumerating all 2^D states."""
        bits = torch.arange(self.input_dim)
        states = ((torch.arange(2**self.input_dim)[:, None] >> bits) & 1).to(torch.float64)
        log_p = self.true_log_prob(states)
        return float(-(log_p.exp() * log_p).sum())
