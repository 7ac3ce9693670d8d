"""The Lightning DataModules (``conf/data/``): binarized MNIST, the UCI sets and one's own data from
``.npz``/``.npy`` files, arrays already in memory, dynamically binarized MNIST, and a synthetic set whose
distribution is known exactly.

Examples:
    >>> dm = NPZDataModule("dna", download=False)
    >>> dm.input_dim  # known before setup(), so the model can be built first
    180
    >>> x = torch.randint(0, 2, (50, 6))
    >>> dm = TensorDataModule.from_array(x, split=(0.6, 0.2, 0.2))
    >>> dm.input_dim, len(dm.split("train")), len(dm.split("test"))
    (6, 30, 10)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision.datasets import MNIST

from made_exp.data.batches import GroupedBatches, TensorBatches
from made_exp.data.files import (
    DATASETS,
    DEFAULT_SPLIT,
    SPLITS,
    DataError,
    cache_dir,
    check_binary,
    dataset_info,
    load_npz_splits,
    load_own_data,
    resolve_dataset,
    split_rows,
)

__all__ = ["BinarizedDataModule", "NPZDataModule", "TensorDataModule", "MNISTDataModule", "SyntheticDataModule"]

# Independent of the run's seed, so every run is scored on the same bits of MNIST valid/test.
_EVAL_BINARIZATION_SEED = 2015
_MAX_ENUMERABLE_DIM = 20  # 2^20 states: exact entropy in about a second


class BinarizedDataModule(pl.LightningDataModule):
    """Resident (N, D) train/valid/test tensors served as ``TensorBatches``; subclasses implement ``_load``.

    The generator that orders training batches is seeded with ``seed`` and saved in checkpoints
    (``state_dict``), so a resumed run sees the same batches it would have seen.
    """

    dynamic_binarization = False

    def __init__(
        self, input_dim: int | None, batch_size: int, eval_batch_size: int, seed: int, minibatches_per_step: int = 1
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
        """D, the number of binary variables per example (read from the data when only the file says it)."""
        return self._input_dim if self._input_dim is not None else self.split("train").shape[1]

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
    """A dataset from a release-format ``.npz``: one of the ``DATASETS`` by ``name`` (binarized MNIST or a
    UCI set), or one's own file at ``path``.

    ``path`` is a release-format ``.npz`` or one (N, D) 0/1 array (an ``.npy``, or an ``.npz`` holding one
    array) cut into train/valid/test by the fractions ``split`` (``files.split_rows``). Its D and row counts
    come from the file, unless ``name`` is given and is a paper set's, which the file must then match.
    ``name`` defaults to the file's stem.
    """

    def __init__(
        self,
        name: str | None = None,
        data_dir: str | Path | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 2000,
        seed: int = 0,
        download: bool = True,
        url: str | None = None,
        minibatches_per_step: int = 1,
        path: str | Path | None = None,
        split: Sequence[float] | None = None,
    ) -> None:
        if name is None and path is None:
            raise DataError("give a dataset name (data.name) or a file of your own (data.path)")
        info = dataset_info(name) if name is not None and (path is None or name in DATASETS) else None
        super().__init__(info.input_dim if info else None, batch_size, eval_batch_size, seed, minibatches_per_step)
        self.name = name if name is not None else Path(path).stem
        self.info, self.data_dir, self.download, self.url = info, data_dir, download, url
        self.path = None if path is None else Path(path).expanduser()
        self.fractions = None if split is None else tuple(split)

    def _load(self) -> dict[str, Tensor]:
        if self.path is not None:
            return load_own_data(self.path, self.fractions, self.info)
        return load_npz_splits(resolve_dataset(self.info.name, self.data_dir, self.download, self.url), self.info)


class TensorDataModule(BinarizedDataModule):
    """Data already in memory: (N, D) 0/1 arrays or tensors, one per split, validated like a file's.

    ``TensorDataModule.from_array(x, split=(0.8, 0.1, 0.1))`` cuts one array as ``NPZDataModule`` cuts a file.
    """

    def __init__(
        self,
        train: Tensor | np.ndarray,
        valid: Tensor | np.ndarray,
        test: Tensor | np.ndarray,
        batch_size: int = 100,
        eval_batch_size: int = 2000,
        seed: int = 0,
        minibatches_per_step: int = 1,
    ) -> None:
        splits = {
            split: check_binary(data, f"{split} array")
            for split, data in zip(SPLITS, (train, valid, test), strict=True)
        }
        widths = {split: data.shape[1] for split, data in splits.items()}
        if len(set(widths.values())) != 1:
            raise DataError(f"the splits have different numbers of columns: {widths}")
        super().__init__(widths["train"], batch_size, eval_batch_size, seed, minibatches_per_step)
        self._splits = splits

    @classmethod
    def from_array(
        cls, data: Tensor | np.ndarray, split: Sequence[float] = DEFAULT_SPLIT, **kwargs
    ) -> TensorDataModule:
        """One (N, D) array shuffled with a fixed seed and cut into train/valid/test by ``split``."""
        return cls(*split_rows(check_binary(data, "array"), split, "array").values(), **kwargs)

    def _load(self) -> dict[str, Tensor]:
        return self._splits


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
