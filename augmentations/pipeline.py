"""The multi-view augmentation pipeline: one batched call per view, on the device of the batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from kornia import augmentation as K
from torch import nn


class Pipeline(nn.Module):
    """Turn a batch of images into ``num_views`` augmented, normalised views.

    Build it with :func:`augmentations.build`. Call it with images ``(B, C, H, W)``, ``uint8`` in
    [0, 255] or floating point in [0, 1] (not checked: a float batch in [0, 255] is clipped by the
    colour ops), on any device. It returns a list of ``num_views`` float32 tensors
    ``(B, C, image_size, image_size)`` on the batch's device, normalised per channel as
    ``(x - mean) / std`` with ``x`` in [0, 1]. ``C`` is the length of ``mean``.

    The batch is converted to float32 once; each view is then one batched call of kornia ops over
    the whole batch. The call runs without gradients and outside autocast, so the views are float32
    under ``torch.autocast`` too.

    Random parameters (crop boxes, flips, jitter factors, ...) are drawn by kornia on the CPU in
    float32, whatever the batch's device, also after the pipeline is moved or cast: ``.to()``,
    ``.cuda()``, ``.bfloat16()`` move its few tensors (frozen, unused AutoAugment probabilities and
    solarize ranges, so that DDP finds the whole model on one device) but keep the samplers on
    the CPU in float32. Nothing in it is trained.

    Randomness: without ``seed`` the draws come from torch's global CPU generator, so
    ``torch.manual_seed`` (or Lightning's ``seed_everything``) decides them. With ``seed`` the
    pipeline keeps its own CPU generator state, swapped in for each call and saved after it: the
    n-th calls of two pipelines built with the same seed draw the same parameters, so they give
    the same views of the same batch (on any device, up to its floating-point rounding), and the
    global generator is left untouched. In multi-process training give each process its own seed
    (for example ``seed + rank``), or all processes draw alike.

    Args:
        views: one module per returned view, mapping float32 ``(B, C, H, W)`` in [0, 1] to
            ``(B, C, image_size, image_size)`` in [0, 1].
        image_size: side in pixels of every view but the local crops.
        mean: per-channel mean, in [0, 1] units, subtracted from every view.
        std: per-channel standard deviation, in [0, 1] units, dividing every view.
        seed: seed of the pipeline's own random stream, or ``None`` for the global one.
        local_views: how many of ``views`` (the last ones) are local crops.
        local_size: side in pixels of the local crops (``None`` without them).

    Example:
        >>> import torch
        >>> import augmentations
        >>> first = augmentations.build("byol", image_size=32, mean=(0.5,), std=(0.25,), seed=0)
        >>> second = augmentations.build("byol", image_size=32, mean=(0.5,), std=(0.25,), seed=0)
        >>> images = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
        >>> all(torch.equal(a, b) for a, b in zip(first(images), second(images)))  # same seed, same views
        True
        >>> first.num_views, first.channels
        (2, 1)
    """

    def __init__(
        self,
        views: Sequence[nn.Module],
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int | None = None,
        local_views: int = 0,
        local_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= local_views <= len(views) or (local_views > 0) != (local_size is not None):
            raise ValueError(
                f"local_views must be in [0, {len(views)}] with a local_size exactly when it is > 0, "
                f"got local_views={local_views!r}, local_size={local_size!r}"
            )
        self.views = nn.ModuleList(views)
        self.local_views = local_views
        self.local_size = local_size
        self.normalize = K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.seed = seed
        self._rng_state = None if seed is None else torch.Generator().manual_seed(seed).get_state()
        # kornia's AutoAugment keeps its op probabilities as parameters; nothing here is trained.
        self.requires_grad_(False)

    @property
    def num_views(self) -> int:
        """Number of views each call returns (full-size and local)."""
        return len(self.views)

    @property
    def global_views(self) -> int:
        """Number of full-size (``image_size``) views each call returns, first in the list."""
        return len(self.views) - self.local_views

    @property
    def channels(self) -> int:
        """Number of channels the input and the views have (1 for grayscale, 3 for RGB)."""
        return len(self.mean)

    def forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Augment ``batch`` ``(B, C, H, W)`` into ``num_views`` tensors ``(B, C, image_size, image_size)``
        (the last ``local_views`` of them ``(B, C, local_size, local_size)``).

        Raises:
            TypeError: when ``batch`` is not a tensor.
            ValueError: for a batch that is not ``(B, C, H, W)`` with ``C`` channels, empty, or of
                a dtype other than uint8 or floating point.
        """
        self._check(batch)
        with torch.no_grad(), torch.autocast(batch.device.type, enabled=False), self._random_stream():
            images = batch.to(torch.float32)
            if batch.dtype == torch.uint8:
                images = images.div_(255)
            return [self.normalize(view(images)) for view in self.views]

    def _check(self, batch: torch.Tensor) -> None:
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"expected a tensor of images (B, C, H, W), got {type(batch).__name__}")
        if batch.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(batch.shape)}")
        if batch.shape[1] != self.channels:
            raise ValueError(
                f"expected {self.channels}-channel images (the length of mean/std), "
                f"got {batch.shape[1]} channels in shape {tuple(batch.shape)}"
            )
        if 0 in batch.shape:
            raise ValueError(f"expected a non-empty batch of non-empty images, got shape {tuple(batch.shape)}")
        if batch.dtype != torch.uint8 and not batch.is_floating_point():
            raise ValueError(f"expected uint8 images in [0, 255] or float images in [0, 1], got dtype {batch.dtype}")

    @contextmanager
    def _random_stream(self) -> Iterator[None]:
        if self._rng_state is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            yield
            self._rng_state = torch.get_rng_state()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Pipeline:
        # Module.to / cuda / half / ... all go through _apply, and kornia's ops follow them with their
        # random samplers: GPU draws that the seed does not cover, bfloat16 crop boxes. Move the
        # tensors, then put the samplers back on the CPU in float32.
        super()._apply(fn, recurse)
        for module in self.modules():
            set_rng_device_and_dtype = getattr(module, "set_rng_device_and_dtype", None)
            if set_rng_device_and_dtype is not None:
                set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
        return self

    def extra_repr(self) -> str:
        local = f", local_views={self.local_views}, local_size={self.local_size}" if self.local_views else ""
        return f"image_size={self.image_size}{local}, mean={self.mean}, std={self.std}, seed={self.seed}"
