"""Checks of a run's configuration that need the library (methods, augmentations, checkpoints,
devices), made before any data is loaded, so that a bad value costs seconds, not a run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

import augmentations
from tcl_ssl.checkpointing import RESUME_ADVICE, read_checkpoint
from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.data import dataset_identity
from tcl_ssl.methods import Method, OptimConfig, method_class
from tcl_ssl.runs import check_writable, resolve_checkpoint
from tcl_ssl.safe_io import DamagedFileError

__all__ = ["check_out_outside_dataset", "check_run", "construct_method", "tensorboard_available"]


def check_run(config: PretrainConfig) -> PretrainConfig:
    """``config`` checked for a run and resolved (:meth:`PretrainConfig.resolved`).

    Raises:
        ValueError: naming the first bad option, its value and what is allowed (types and
            ranges, names and devices first, as declared in :mod:`tcl_ssl.config.schema`; then
            methods, augmentations, logger, checkpoint and the run directory).
    """
    config = config.checked()
    cls = method_class(config.method.name)  # raises on unknown names
    config = config.resolved()
    method, trainer = config.method, config.trainer
    assert method.num_views is not None  # resolved() sets it
    if method.augmentation not in augmentations.available():
        raise ConfigError(
            f"unknown augmentation {method.augmentation!r}; available: {', '.join(augmentations.available())}"
        )
    try:  # the augmentation's options, on a stand-in image size and statistics
        augmentations.build(
            method.augmentation,
            image_size=config.data.image_size or 32,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            num_views=method.num_views,
            **method.augmentation_options,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"augmentation_options {method.augmentation_options}: {error}") from None
    if trainer.logger == "tensorboard" and not tensorboard_available():
        raise ConfigError("logger 'tensorboard' needs the tensorboard package: pip install tensorboard")
    if config.run.resume is not None:
        _check_checkpoint(config.run.resume)
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"accelerator {trainer.accelerator!r} asks for a CUDA GPU, but torch finds none on this machine "
            f"(torch {torch.__version__}); use --accelerator cpu, or auto to take a GPU where there is one"
        )
    if trainer.sync_batchnorm and (trainer.accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("sync_batchnorm needs GPUs (torch's SyncBatchNorm does not run on the CPU)")
    check_out_outside_dataset(config.run_dir(), config.data.dataset)
    check_writable(config.run_dir())
    unknown = sorted(set(method.options) - set(cls.options()))
    if unknown:
        allowed = ", ".join(cls.options()) or "none"
        raise ConfigError(f"method {method.name!r} does not accept options {', '.join(unknown)}; allowed: {allowed}")
    cls.check_setting(method.supervised, method.num_views, method.augmentation_options.get("local_views", 0))
    # Build the method once on a stand-in backbone, so that bad option values fail now, not after
    # the data is loaded.
    construct_method(config, nn.Identity(), 8, nn.Identity(), num_classes=2)
    return config


def check_out_outside_dataset(out: Path, dataset: str) -> None:
    """Refuse a run directory ``out`` inside the image folder ``dataset`` (or equal to it): its
    checkpoints and plots would be written among the images, and a later listing would take
    them for data (links resolved, so a linked path into the folder counts too).

    Raises:
        ConfigError: naming both paths.
    """
    identity = dataset_identity(dataset)
    if not Path(identity).is_absolute():  # built-in or torchvision dataset: no folder
        return
    folder, run = Path(identity), out.expanduser().resolve()
    if run == folder or folder in run.parents:
        raise ConfigError(
            f"the run directory (--out) {str(out)!r} is inside the dataset folder {str(folder)!r}: its files "
            "would be written among the images; choose an --out outside the dataset"
        )


def _check_checkpoint(resume: str) -> None:
    """Refuse a ``resume`` that names no checkpoint, or one that :func:`read_checkpoint` refuses
    (damaged, or not a checkpoint of ``tcl-ssl pretrain``)."""
    try:
        checkpoint = resolve_checkpoint(resume)
    except ValueError as error:
        raise ConfigError(f"cannot resume: {error}") from None
    try:
        read_checkpoint(checkpoint, RESUME_ADVICE)  # every entry's CRC (bytes damaged inside a tensor too), its keys
    except DamagedFileError as error:
        raise ConfigError(
            f"cannot resume: checkpoint {str(checkpoint)!r} cannot be read: it {error.problem}; {error.advice}"
        ) from None


def construct_method(
    config: PretrainConfig,
    backbone: nn.Module,
    feature_dim: int,
    augment: nn.Module,
    num_classes: int,
) -> Method:
    """The configured method (``config`` resolved) around ``backbone`` and ``augment``.

    Raises:
        ValueError: for an option value of a kind no check of the method caught.
    """
    options = config.optim
    if options.lr is None or options.weight_decay is None or options.warmup_epochs is None or options.optimizer is None:
        raise ValueError("construct_method needs a resolved configuration (PretrainConfig.resolved())")
    optim = OptimConfig(
        lr=options.lr,
        weight_decay=options.weight_decay,
        warmup_epochs=options.warmup_epochs,
        batch_size=options.batch_size,
        optimizer=options.optimizer,
    )
    try:
        return method_class(config.method.name)(
            backbone,
            feature_dim,
            augment,
            supervised=config.method.supervised,
            num_classes=num_classes,
            optim=optim,
            **config.method.options,
        )
    except TypeError as error:
        raise ValueError(
            f"invalid value in options {config.method.options} of method {config.method.name!r} ({error}); "
            "see the defaults in --list-methods"
        ) from error


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (tensorboard or tensorboardX installed)."""
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
