"""A training data loader whose order is reproducible and resumable mid-epoch.

The order of an epoch depends only on (seed, epoch): every rank computes the same permutation of
the training subjects, cuts it into GLOBAL batches of ``global_batch`` subjects and takes its own
contiguous slice, so the concatenation over ranks (in rank order) is exactly the batch a single
process would see. The loader reports how many batches of the current epoch it has handed out
(Lightning stores that in checkpoints) and, after ``load_state_dict``, skips them without
loading their images: a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only augment; leave the cores to the model


class EpochBatchSampler(Sampler[list[int]]):
    """Per-rank batches of a seeded per-epoch permutation (last incomplete global batch dropped)."""

    def __init__(self, n: int, global_batch: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        if n < global_batch:
            raise ValueError(f"{n} training subjects are fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.local_batch = global_batch // world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        skip, self.skip = self.skip, 0
        for b in range(skip, len(self)):
            start = b * self.global_batch + self.rank * self.local_batch
            yield order[start : start + self.local_batch]


class ResumableLoader(DataLoader):
    """``DataLoader`` over an :class:`EpochBatchSampler` with ``state_dict`` / ``load_state_dict``.

    Before each pass it calls ``dataset.set_epoch(epoch)`` (when the dataset has it), so random
    views depend on the epoch; workers are not persistent, so they see the new epoch.
    """

    def __init__(self, dataset: Dataset, batch_sampler: EpochBatchSampler, **kwargs: Any):
        kwargs.pop("persistent_workers", None)
        if kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("worker_init_fn", _one_thread)
            if sys.platform.startswith("linux"):
                kwargs.setdefault("multiprocessing_context", "fork")  # no re-import of MONAI per worker
        super().__init__(dataset, batch_sampler=batch_sampler, persistent_workers=False, **kwargs)
        self._served = 0

    def __iter__(self) -> Iterator[Any]:
        sampler: EpochBatchSampler = self.batch_sampler  # type: ignore[assignment]
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(sampler.epoch)
        self._served = sampler.skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and number of batches of it already handed out."""
        return {"epoch": int(self.batch_sampler.epoch), "served": int(self._served)}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next pass is epoch ``state['epoch']`` minus its first ``served`` batches."""
        sampler: EpochBatchSampler = self.batch_sampler  # type: ignore[assignment]
        sampler.set_epoch(int(state["epoch"]))
        sampler.skip = int(state["served"]) % max(len(sampler), 1)
