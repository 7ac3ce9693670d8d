"""Minibatches sliced from resident tensors: datasets this small gain nothing from worker processes
or per-example collation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["TensorBatches", "GroupedBatches"]


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
