"""Batched, resumable DataLoaders over in-memory splits and streamed ones (:mod:`tcl_ssl.data.streaming`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sized
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from tcl_ssl.data.sources import Split
from tcl_ssl.data.streaming import FileSplit, own_generator

_T = TypeVar("_T")


class BatchedTensorDataset(torch.utils.data.Dataset):
    """Map-style dataset over an in-memory :class:`~tcl_ssl.data.Split` that fetches a whole
    batch in one indexing op.

    With a DataLoader, ``__getitems__`` receives the batch's indices, so a batch costs one
    gather instead of ``B`` item lookups and a collate: items are ``(uint8 (C, H, W), int64 ())``
    and batches ``(uint8 (B, C, H, W), int64 (B,))``.
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.split.images[index], self.split.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # NumPy's gather: torch's spreads a 256-image gather over its threads, which cost
        # ~8 ms instead of ~0.05 ms per batch on a busy 2-core machine (measured)
        index = np.asarray(indices)
        return torch.from_numpy(self.split.images.numpy()[index]), torch.from_numpy(self.split.labels.numpy()[index])


def _identity(batch: _T) -> _T:
    return batch


class EpochRandomSampler(torch.utils.data.RandomSampler):
    """A random order that is a function of ``(seed, epoch)`` alone, like ``DistributedSampler``'s:
    Lightning calls :meth:`set_epoch` before each epoch, so a resumed run draws the same orders as
    an uninterrupted one without saving a generator state. Under DDP, Lightning replaces it (a
    ``RandomSampler``) with a shuffling ``DistributedSampler``, which behaves the same way.

    Args:
        data_source: the dataset (only its length is used).
        seed: the seed of every epoch's order.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose position within an epoch goes into Lightning's checkpoints.

    ``state_dict()`` goes into every checkpoint (see :class:`tcl_ssl.checkpointing.ResumeState`)
    and ``load_state_dict()`` gets it back before iteration resumes: a run resumed from a
    mid-epoch checkpoint then skips the batches that epoch already trained on (the sampler's
    epoch tells whether the resumed epoch is the saved one). The skipped batches are drawn and
    dropped without being fetched: the rest of the epoch is loaded from the remaining index
    batches (so a streamed split does not decode the skipped files again).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._iterations = -1  # epochs started, for samplers that do not count them
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def _epoch(self) -> int:
        # the sampler whose epoch counts: the batch sampler's, else the loader's own
        sampler = getattr(self.batch_sampler, "sampler", self.sampler)
        return int(getattr(sampler, "epoch", self._iterations))

    # a generator that wraps the loader's iterator and counts its batches, where DataLoader's stub
    # declares its own iterator class
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # a generator: its body runs at the first next(), after Lightning's set_epoch
        self._iterations += 1
        skip = 0
        if self._resume is not None:
            epoch, done = self._resume
            skip = done if epoch == self._epoch() and done < len(self) else 0
            self._resume = None
        self._yielded = skip
        batches = super().__iter__() if skip == 0 else iter(self._remainder(skip))
        for batch in batches:
            self._yielded += 1
            yield batch

    def _remainder(self, skip: int) -> torch.utils.data.DataLoader:
        """A plain DataLoader, set up as this one, over this epoch's index batches after the first ``skip``."""
        if self.batch_sampler is None:
            raise RuntimeError("resuming within an epoch needs a loader that batches (batch_size or batch_sampler)")
        remaining = list(itertools.islice(iter(self.batch_sampler), skip, None))
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=remaining,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            worker_init_fn=self.worker_init_fn,
            generator=self.generator,
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=self.multiprocessing_context,
        )

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the epoch being iterated and how many of its batches were handed out."""
        return {"epoch": self._epoch(), "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip the batches ``state`` says were handed out, if the next epoch is the saved one."""
        self._resume = (int(state["epoch"]), int(state["batches"]))
        self._iterations = int(state["epoch"]) - 1


def batch_loader(
    split: Split | FileSplit, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0
) -> ResumableDataLoader:
    """A resumable DataLoader of uint8 ``(images, labels)`` batches from a split.

    Args:
        split: the split, in memory or decoded from its files by ``split.workers`` processes.
        batch_size: images per batch.
        shuffle: a new order every epoch, which depends only on ``seed`` and the epoch.
        drop_last: leave out the last, smaller batch.
        seed: the seed of the orders and of the workers' base seed.

    Returns:
        A :class:`ResumableDataLoader` of ``(uint8 (B, C, H, W), int64 (B,))`` batches.
    """
    dataset = split.dataset() if isinstance(split, FileSplit) else BatchedTensorDataset(split)
    workers = split.workers if isinstance(split, FileSplit) else 0
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochRandomSampler(dataset, seed) if shuffle else None,
        drop_last=drop_last,
        collate_fn=_identity,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=workers > 0 and torch.cuda.is_available(),
        prefetch_factor=4 if workers > 0 else None,
        # the loader draws a base seed for workers at each epoch: from its own generator, not
        # from the global one, which the device augmentation uses and checkpoints save
        generator=torch.Generator().manual_seed(seed),
    )


def iterate_batches(split: Split | FileSplit, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Sequential ``(uint8 (B, C, H, W), int64 (B,))`` batches of a split, in order (the last
    one smaller), without shuffling."""
    if isinstance(split, FileSplit):
        dataset = split.dataset()
        yield from torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=_identity,
            num_workers=split.workers,
            prefetch_factor=4 if split.workers else None,
            generator=own_generator(),
        )
        return
    for start in range(0, len(split), batch_size):
        yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
