"""Pretraining: a configuration in, a run directory and its summary out.

:func:`pretrain` is a short sequence of named steps: check the configuration, load the data,
build the method and the Lightning Trainer, record the run, train, evaluate, summarise. The run
directory's files are described in :mod:`tcl_ssl.runs.record`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, Logger

import augmentations
from tcl_ssl.backbones import build_backbone
from tcl_ssl.checkpointing import AtomicCheckpointIO, LastCheckpoint, NonFiniteLossGuard, ResumeState
from tcl_ssl.config import RUN_DIR_ENV, PretrainConfig
from tcl_ssl.data import ImageData, batch_loader, load_dataset
from tcl_ssl.evaluation import EvalSettings, Evaluation, evaluate_backbone
from tcl_ssl.evaluation.plots import metrics_files, read_epoch_metrics, write_run_plots
from tcl_ssl.evaluation.suite import split_features
from tcl_ssl.methods import Method, method_class
from tcl_ssl.monitoring import ThroughputMeter, ValidationMonitor, online_probe_top1, peak_memory, reset_peak_memory
from tcl_ssl.preflight import check_run, construct_method
from tcl_ssl.processes import adopt_children, end_process_group_at_exit
from tcl_ssl.runs import (
    DatasetInfo,
    OnlineProbe,
    PeakMemory,
    RunRecord,
    RunSummary,
    read_record,
    resolve_checkpoint,
    run_dir_of,
)
from tcl_ssl.runs.reuse import check_reuse

__all__ = [
    "build_method",
    "default_precision",
    "effective_data_source",
    "load_run_data",
    "pretrain",
    "resolved_precision",
    "resolved_stem",
]


def pretrain(config: PretrainConfig, data: ImageData | None = None) -> RunSummary | None:
    """Run one pretraining job; its summary (also written to ``<run>/summary.json``).

    Args:
        config: the run's configuration (checked here before any work).
        data: the dataset, if the caller has it loaded (default: loaded from ``config``).

    Returns:
        The summary on process 0; ``None`` on the other processes of a multi-process run.

    Raises:
        ValueError: for a bad configuration, before any data is loaded.
    """
    began = time.perf_counter()
    config = prepare(config)
    run_dir = config.run_dir()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    pl.seed_everything(config.run.seed, workers=True, verbose=False)
    data = (data if data is not None else load_run_data(config)).with_train_images(config.data.train_images)
    if len(data.train) < config.optim.batch_size:
        raise ValueError(
            f"batch_size {config.optim.batch_size} is larger than the train split ({len(data.train)} images)"
        )
    config = config.replace(
        precision=resolved_precision(config),
        stem=resolved_stem(config, data.image_size),
    )
    method = build_method(config, data)
    trainer, throughput = build_trainer(config, data, run_dir)
    if trainer.is_global_zero:
        record_run(config, data, run_dir)
    try:
        training = fit(trainer, method, data, config, throughput)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)  # a later run in this process gets its own directory
    evaluation, random_init = evaluate_pretrained(trainer, method, data, config)
    if evaluation is None or random_init is None:  # processes other than 0 evaluate nothing
        return None
    summary = summarize(config, data, run_dir, method, trainer, evaluation, random_init, training, began)
    summary.write()
    if config.eval.plots:
        write_run_plots(
            run_dir / "plots",
            evaluation,
            data,
            metrics_files(run_dir),
            title=f"{config.method.name} on {config.data.dataset}",
        )
    return summary


def prepare(config: PretrainConfig) -> PretrainConfig:
    """``config`` checked and resolved, with ``resume`` pointing at the checkpoint file; a resume
    without ``out`` continues in the checkpoint's run directory, wherever that is now.

    Raises:
        ValueError: for a bad configuration, or a run directory that holds a run this one may not
            overwrite (:func:`tcl_ssl.runs.reuse.check_reuse`), before anything is written.
    """
    if config.run.resume is not None and config.run.out is None:
        config = config.replace(out=str(run_dir_of(resolve_checkpoint(config.run.resume))))
    config = check_run(config)
    if config.run.resume is not None:
        config = config.replace(resume=str(resolve_checkpoint(config.run.resume)))
    check_reuse(config)
    return config


def resolved_stem(config: PretrainConfig, image_size: int) -> str:
    """The configured stem or, if unset: ``small`` (full resolution, the CIFAR stem) for images
    up to 64 px on a GPU; ``imagenet`` (4x downsampling) for larger images, and on the CPU,
    where the full-resolution stem is ~10x slower."""
    if config.model.stem is not None:
        return config.model.stem
    accelerator = config.trainer.accelerator
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "small" if on_gpu and image_size <= 64 else "imagenet"


def default_precision(accelerator: str) -> str:
    """``bf16-mixed`` on a GPU that supports it, ``16-mixed`` on other GPUs, else ``32-true``."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolved_precision(config: PretrainConfig) -> int | str:
    """The configured precision or, if unset: the precision a resumed run was recorded with (a
    run keeps its precision when the default differs, e.g. on another device), else
    :func:`default_precision`."""
    if config.trainer.precision is not None:
        return config.trainer.precision
    if config.run.resume is not None:
        try:
            held = read_record(config.run.resume).config.trainer.precision
        except ValueError:  # a checkpoint without its run's config.json
            held = None
        if held is not None:
            return held
    return default_precision(config.trainer.accelerator)


def effective_data_source(config: PretrainConfig) -> str:
    """``config``'s data source, except that a resumed ``auto`` run keeps the source (memory or
    stream) it started with: with ``skip_bad_images`` the two can split differently."""
    source = config.trainer.data_source
    if config.run.resume is None or source != "auto":
        return source
    try:
        streamed = read_record(config.run.resume).dataset.streamed
    except ValueError:  # a checkpoint without its run's config.json
        return "auto"
    return "stream" if streamed else "memory"


def load_run_data(config: PretrainConfig) -> ImageData:
    """The dataset of a (resolved) configuration, all of its train split (``train_images`` is
    applied by :func:`pretrain`), from :func:`effective_data_source`."""
    data = config.data
    return load_dataset(
        data.dataset,
        data_dir=Path(data.data_dir) if data.data_dir else None,
        image_size=data.image_size,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        skip_bad_images=data.skip_bad_images,
        source=effective_data_source(config),
        decode_size=data.decode_size,
        workers=config.trainer.workers,
    )


def build_method(config: PretrainConfig, data: ImageData) -> Method:
    """The configured method (``config`` resolved) with a fresh backbone and its training augmentation."""
    method = config.method
    if method.augmentation is None or method.num_views is None:
        raise ValueError("build_method needs a resolved configuration (PretrainConfig.resolved())")
    backbone, feature_dim = build_backbone(config.model.backbone, data.channels, resolved_stem(config, data.image_size))
    augment = augmentations.build(
        method.augmentation,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        num_views=method.num_views,
        **method.augmentation_options,
    )
    return construct_method(config, backbone, feature_dim, augment, data.num_classes)


def build_trainer(config: PretrainConfig, data: ImageData, run_dir: Path) -> tuple[pl.Trainer, ThroughputMeter]:
    """Lightning's Trainer with the run's callbacks (throughput, non-finite loss guard, resumable
    state, atomic checkpoints, the validation monitor) and loggers; and its throughput meter."""
    trainer_options, evaluation = config.trainer, config.eval
    throughput = ThroughputMeter()
    callbacks: list[Callback] = [
        throughput,
        NonFiniteLossGuard(),
        ResumeState(),
        LastCheckpoint(run_dir / "checkpoints", trainer_options.checkpoint_every_n_steps),
    ]
    if evaluation.knn_every:
        preprocess = augmentations.build("eval", image_size=data.image_size, mean=data.mean, std=data.std, num_views=1)
        callbacks.append(
            ValidationMonitor(data, preprocess, evaluation.knn_k, evaluation.knn_temperature, evaluation.knn_every)
        )
    trainer = pl.Trainer(
        max_epochs=config.optim.epochs,
        accelerator=trainer_options.accelerator,
        devices=trainer_options.devices,
        num_nodes=trainer_options.num_nodes,
        strategy=trainer_options.strategy,
        sync_batchnorm=trainer_options.sync_batchnorm,
        precision=trainer_options.precision,  # type: ignore[arg-type]
        logger=build_loggers(trainer_options.logger, run_dir),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=trainer_options.metrics_every_n_steps,
        limit_train_batches=trainer_options.limit_train_batches,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    return trainer, throughput


def build_loggers(kind: str, run_dir: Path) -> list[Logger]:
    """Lightning's CSVLogger (always: the summary reads it), plus a TensorBoardLogger for ``tensorboard``."""
    loggers: list[Logger] = [CSVLogger(run_dir, name="logs")]
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger  # needs the optional tensorboard package

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    return loggers


def record_run(config: PretrainConfig, data: ImageData, run_dir: Path) -> RunRecord:
    """Write the run's ``config.json``: the configuration, the dataset as loaded, the method's
    defaults; a resumed run keeps the record of its resumes and adds this one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sizes = data.sizes()
    record = RunRecord(
        config=config,
        run_dir=run_dir,
        dataset=DatasetInfo(
            train=sizes["train"],
            val=sizes["val"],
            test=sizes["test"],
            classes=data.num_classes,
            channels=data.channels,
            image_size=data.image_size,
            mean=list(data.mean),
            std=list(data.std),
            streamed=data.streamed,
        ),
        method_defaults=method_class(config.method.name).options(),
    )
    if config.run.resume is not None:
        try:
            previous: RunRecord | None = read_record(run_dir)
        except ValueError:
            previous = None
        record = record.with_resume(previous, config.run.resume)
    record.write()
    return record


@dataclass(frozen=True)
class Training:
    """What :func:`fit` measured: the training loop's seconds, images per second and peak memory."""

    seconds: float
    images_per_second: float | None
    memory: PeakMemory


def fit(
    trainer: pl.Trainer, method: Method, data: ImageData, config: PretrainConfig, throughput: ThroughputMeter
) -> Training:
    """Train ``method`` on the train split (resuming from ``config``'s checkpoint, if any)."""
    loader = batch_loader(data.train, config.optim.batch_size, shuffle=True, drop_last=True, seed=config.run.seed)
    reset_peak_memory()
    start = time.perf_counter()
    try:
        trainer.fit(method, train_dataloaders=loader, ckpt_path=config.run.resume)
    finally:
        adopt_children(trainer)  # the command line waits for them before it exits
        if trainer.world_size > 1:
            end_process_group_at_exit()
    seconds = time.perf_counter() - start
    return Training(seconds, throughput.images_per_second(), peak_memory(trainer.strategy.root_device))


def evaluate_pretrained(
    trainer: pl.Trainer, method: Method, data: ImageData, config: PretrainConfig
) -> tuple[Evaluation | None, Evaluation | None]:
    """The evaluation protocols on the trained backbone and the cheap ones (kNN, fast linear
    probe) on the same backbone before training (rebuilt from the seed); ``(None, None)`` on
    processes other than 0, which only embed their shard of each split."""
    device = trainer.strategy.root_device
    features = split_features(method.backbone.to(device), data, device)
    pl.seed_everything(config.run.seed, workers=True, verbose=False)  # the same initial weights as the method's
    random_backbone, _ = build_backbone(config.model.backbone, data.channels, resolved_stem(config, data.image_size))
    random_features = split_features(random_backbone.to(device), data, device)
    if not trainer.is_global_zero:
        return None, None
    evaluation_options = config.eval
    settings = EvalSettings(
        knn_k=evaluation_options.knn_k,
        knn_temperature=evaluation_options.knn_temperature,
        seed=config.run.seed,
        linear_aug_epochs=evaluation_options.linear_aug_epochs,
        linear_aug_lr=evaluation_options.linear_aug_lr,
    )
    protocols = tuple(evaluation_options.protocols)
    evaluation = evaluate_backbone(
        method.backbone,
        method.feature_dim,
        data,
        protocols,
        settings,
        device,
        accelerator=config.trainer.accelerator,
        features=features,
    )
    cheap = tuple(p for p in protocols if p in ("knn", "linear")) or ("knn",)
    random_init = evaluate_backbone(
        random_backbone, method.feature_dim, data, cheap, settings, device, features=random_features
    )
    return evaluation, random_init


def summarize(
    config: PretrainConfig,
    data: ImageData,
    run_dir: Path,
    method: Method,
    trainer: pl.Trainer,
    evaluation: Evaluation,
    random_init: Evaluation,
    training: Training,
    began: float,
) -> RunSummary:
    """The run's summary (see :class:`~tcl_ssl.runs.RunSummary`)."""
    metrics_csvs = metrics_files(run_dir)
    loss = trainer.callback_metrics.get("train_loss_epoch")
    return RunSummary(
        method=config.method.name,
        supervised=config.method.supervised,
        dataset=config.data.dataset,
        epochs=config.optim.epochs,
        splits=data.sizes(),
        val=evaluation.metrics["val"],
        test=evaluation.metrics["test"],
        random_init=random_init.metrics,
        online_probe=online_probe_summary(metrics_csvs, method, evaluation, data),
        linear_weight_decay=evaluation.linear_weight_decay,
        train_seconds=training.seconds,
        # data loading (unless the data was handed in), training and evaluation; not the plots
        wall_seconds=time.perf_counter() - began,
        images_per_second=training.images_per_second,
        peak_memory=training.memory,
        final_train_loss=None if loss is None else float(loss),
        metrics_csv=str(metrics_csvs[-1]) if metrics_csvs else None,
        run_dir=str(run_dir),
    )


def online_probe_summary(
    metrics_csvs: list[Path], method: Method, evaluation: Evaluation, data: ImageData
) -> OnlineProbe:
    """The online probe's top-1 at the end of training on the validation and test splits, and its
    best validation top-1 over the monitored epochs (all log versions) and that epoch (1-based)."""
    final = {
        name: online_probe_top1(method, evaluation.raw_features[name], data.split(name).labels)
        for name in ("val", "test")
    }
    points = read_epoch_metrics(metrics_csvs).get("val_online_top1", [])
    if not points:
        return OnlineProbe(final["val"], final["test"])
    best_epoch, best = max(points, key=lambda p: p[1])
    return OnlineProbe(final["val"], final["test"], best, best_epoch + 1)
