"""Image folders too large for memory: splits read from their files, decoded by DataLoader workers.

A :class:`FileSplit` holds file names and labels only. Its loader's worker processes read and
decode each batch's files to a fixed ``size x size`` uint8 canvas (shorter side resized,
centre crop: the same :func:`~tcl_ssl.data.decode.decode_file` as the in-memory path, so the
pixels are identical); the random crops, flips and colour operations stay batched on the
training device. Under DDP, Lightning gives each process a ``DistributedSampler`` over the
split, so each process reads only its shard of the files.

``load_image_folder(..., source="auto")`` streams a folder whose decoded images would take more
than :func:`memory_budget` (an eighth of the machine's memory: every DDP process holds its own
copy of an in-memory dataset); ``source="memory"`` or ``"stream"`` chooses explicitly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tcl_ssl.data.decode import decode_file
from tcl_ssl.data.splits import stratified_split

log = logging.getLogger(__name__)

#: where an image folder's images are read from: ``auto`` (``memory`` unless they exceed
#: :func:`memory_budget`), ``memory`` (decoded once, held in memory), ``stream`` (from the files)
SOURCES = ("auto", "memory", "stream")
#: images decoded to estimate a streamed split's per-channel mean and std
STATS_SAMPLE = 10_000


def usable_cpus() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """DataLoader worker processes per training process: the usable CPU cores, at most 8."""
    return min(8, usable_cpus())


def own_generator() -> torch.Generator:
    """A generator for a DataLoader that would otherwise draw its workers' base seed from torch's
    global one, which the training's augmentation uses (and checkpoints save)."""
    return torch.Generator().manual_seed(0)


def memory_budget() -> int:
    """Bytes of decoded images above which ``source="auto"`` streams: an eighth of physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8


def decoded_bytes(num_images: int, size: int, channels: int = 3) -> int:
    """Bytes that ``num_images`` decoded uint8 images of ``channels x size x size`` take."""
    return num_images * channels * size * size


@dataclass
class FileSplit:
    """One split as image files, decoded to uint8 ``(channels, size, size)`` when a batch asks for them.

    It has the interface of :class:`~tcl_ssl.data.Split` but ``images``: use
    :func:`~tcl_ssl.data.batch_loader` or :func:`~tcl_ssl.data.iterate_batches` to read it.

    Attributes:
        files: ``(N,)`` file paths as byte strings (a NumPy array, so that forked worker
            processes share it without copying).
        labels: int64 class labels ``(N,)``.
        size: side in pixels of the decoded images.
        channels: 3 (RGB) or 1 (grayscale).
        skip_bad: replace a file that cannot be decoded by the next one that can (with a
            warning naming it) instead of stopping the run.
        workers: DataLoader worker processes that decode the files, per loader.

    Raises:
        ValueError: when ``labels`` is not ``(N,)`` or ``channels`` not 1 or 3.
    """

    files: np.ndarray
    labels: Tensor
    size: int
    channels: int = 3
    skip_bad: bool = False
    workers: int = 0

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.files),):
            raise ValueError(f"labels must have shape ({len(self.files)},), got {tuple(self.labels.shape)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @classmethod
    def from_paths(cls, files: Sequence[Path], labels: Sequence[int], size: int, **kwargs: Any) -> FileSplit:
        """A split of the image ``files`` with their ``labels``, decoded to ``size``; ``kwargs``:
        the other fields (``channels``, ``skip_bad``, ``workers``)."""
        encoded = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        return cls(encoded, torch.tensor(list(labels), dtype=torch.long), size, **kwargs)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_size(self) -> int:
        """The decoded images' side in pixels."""
        return self.size

    def subset(self, index: Sequence[int] | np.ndarray | Tensor) -> FileSplit:
        """The files at ``index`` (integer indices), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return replace(self, files=self.files[index], labels=self.labels[torch.from_numpy(index)])

    def split_off(self, fraction: float) -> tuple[FileSplit, FileSplit]:
        """``(rest, held_out)``: a stratified ``fraction`` held out (fixed seed, as for in-memory splits)."""
        rest, held_out = stratified_split(self.labels.numpy(), fraction)
        return self.subset(rest), self.subset(held_out)

    def resized(self, size: int) -> FileSplit:
        """This split decoded to ``size x size`` instead."""
        return replace(self, size=size)

    def with_channels(self, channels: int) -> FileSplit:
        """This split decoded to ``channels`` (1 or 3) instead."""
        return replace(self, channels=channels)

    def dataset(self) -> DecodedFiles:
        """The split as a map-style dataset that decodes its files on access."""
        return DecodedFiles(self)

    def stats(self, sample: int = STATS_SAMPLE) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in ``[0, 1]`` units, over up to ``sample`` images drawn with a
        fixed seed (all of them for a smaller split). The loader's workers reduce each batch to
        per-channel sums, so no image reaches this process."""
        if len(self) > sample:
            chosen = np.sort(np.random.default_rng(0).choice(len(self), sample, replace=False))
            return self.subset(chosen).stats(sample)
        sums = torch.utils.data.DataLoader(
            self.dataset(),
            batch_size=256,
            collate_fn=_channel_sums,
            num_workers=self.workers,
            generator=own_generator(),
        )
        total, total_sq, count = (sum(parts) for parts in zip(*sums))
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
        return tuple(mean.tolist()), tuple(std.tolist())


def _channel_sums(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """Per-channel sums of the pixels and of their squares (float64, ``[0, 1]`` units) of a
    uint8 batch ``(B, C, H, W)``, and the pixels per channel."""
    images = batch[0].double().div_(255.0)
    return images.sum(dim=(0, 2, 3)), images.square().sum(dim=(0, 2, 3)), images[:, 0].numel()


class DecodedFiles(torch.utils.data.Dataset):
    """The images of a :class:`FileSplit`, decoded on access. ``__getitems__`` returns a whole
    batch as ``(uint8 (B, C, S, S), int64 (B,))``, the in-memory loader's batch format."""

    def __init__(self, split: FileSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def _decode(self, index: int) -> tuple[Tensor, int]:
        """The image at ``index`` and the index it came from (a later one where ``skip_bad``
        skipped undecodable files)."""
        split = self.split
        for offset in range(len(split)):
            at = (index + offset) % len(split)
            path = os.fsdecode(split.files[at])
            try:
                return decode_file(path, split.size, split.channels), at
            except ValueError as error:
                if not split.skip_bad:
                    raise
                log.warning("skipped an image file that cannot be decoded: %s (%s)", path, error)
        raise ValueError("none of the image files could be decoded")

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, at = self._decode(index)
        return image, self.split.labels[at]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        images, at = zip(*(self._decode(i) for i in indices))
        return torch.stack(images), self.split.labels[torch.as_tensor(at)]
