"""The pretraining recipe: data -> on-device augmentation -> method -> Lightning Trainer -> kNN.

:func:`pretrain` runs one pretraining job from a :class:`PretrainConfig` and writes the run
directory::

    <out>/config.json        the resolved configuration
    <out>/checkpoints/       last.ckpt, written atomically every epoch (and every N steps with
                             ``checkpoint_every_n_steps``); ``resume=<out>`` continues the run
    <out>/logs/version_N/metrics.csv   per-step and per-epoch metrics (Lightning's CSVLogger;
                             a resumed run writes the next version, nothing is overwritten)
    <out>/summary.json       final figures on the validation and test splits (see pretrain())
    <out>/plots/             curves.png, tsne.png, confusion.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger
from torch import nn

import augmentations
from tcl_ssl.backbones import build_backbone
from tcl_ssl.checkpointing import AtomicCheckpointIO, LastCheckpoint, NonFiniteLossGuard, ResumeState
from tcl_ssl.data import SOURCES, ImageData, batch_loader, load_dataset
from tcl_ssl.evaluation import EvalSettings, Evaluation, evaluate_backbone, knn_accuracy
from tcl_ssl.evaluation.features import gather_features
from tcl_ssl.evaluation.plots import metrics_files, read_epoch_metrics, write_run_plots
from tcl_ssl.evaluation.suite import check_protocols, split_features
from tcl_ssl.export import resolve_checkpoint, run_config
from tcl_ssl.methods import Method, OptimConfig, method_class
from tcl_ssl.process_memory import peak_rss, reset_peak_rss

log = logging.getLogger(__name__)

#: environment variable that hands the run directory to DDP child processes
RUN_DIR_ENV = "TCL_SSL_RUN_DIR"
#: training loggers: Lightning's CSVLogger, or its TensorBoardLogger where tensorboard is installed
LOGGERS = ("csv", "tensorboard")


@dataclass
class PretrainConfig:
    """Everything that defines one pretraining run (all defaults give the CPU quick start)."""

    method: str = "tcl"
    dataset: str = "mnist5k"
    epochs: int = 8
    batch_size: int = 128
    supervised: bool = False
    seed: int = 0
    out: str | None = None
    backbone: str = "resnet18"
    stem: str | None = None  # None: chosen by image size and device, see resolved_stem()
    # Training recipe; None takes the method's published default (see resolved()).
    augmentation: str | None = None
    augmentation_options: dict[str, Any] = field(default_factory=dict)  # e.g. min_scale
    num_views: int | None = None
    optimizer: str | None = None  # sgd or lars
    lr: float | None = None  # at batch size 256
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. temperature, k1, queue_size
    precision: str | None = None  # None: bf16-mixed on a GPU that supports it, else 32-true
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning's: auto, ddp, ddp_spawn, fsdp, ...
    sync_batchnorm: bool = False  # BatchNorm statistics over all processes (SimCLR/BYOL on many GPUs)
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every_n_epochs: int = 1  # 0 turns the per-epoch validation monitor off
    eval_protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])  # run after training
    linear_aug_epochs: int = 90  # the linear-aug protocol's epochs
    linear_aug_lr: float = 0.1  # the linear-aug protocol's lr at batch 256 (scaled linearly)
    plots: bool = True  # curves, t-SNE and confusion matrix into <run>/plots
    logger: str = "csv"
    data_dir: str | None = None
    image_size: int | None = None  # every source is resized to this (image folders default to 32)
    val_fraction: float | None = None  # None: 0.1 of train, where validation is split off train
    test_fraction: float | None = None  # None: 0.2; single image folders only
    train_images: int | None = None  # a stratified subset of the train split (val and test unchanged)
    skip_bad_images: bool = False  # image folders: leave out files that cannot be decoded (else an error)
    data_source: str = "auto"  # image folders: memory, stream (decoded by loader workers), auto (by size)
    decode_size: int | None = None  # image folders: side the files are decoded to (default image_size)
    workers: int | None = None  # loader processes per training process for streamed folders (default: cores, <= 8)
    resume: str | None = None
    recipe: str | None = None  # the recipe file (tcl-ssl pretrain --config) this configuration started from
    checkpoint_every_n_steps: int = 0  # 0: last.ckpt at the end of each epoch only
    limit_train_batches: float | int = 1.0

    def resolved(self) -> PretrainConfig:
        """This configuration with every unset recipe field taken from the method's defaults.

        A default warm-up lasts at most a tenth of the run, rounded to the nearest whole epoch
        (1 epoch for runs of 5 to 14 epochs, none below 5), so that a short run is not mostly
        warm-up; a warm-up given explicitly is kept as it is.
        """
        defaults = method_class(self.method).defaults
        warmup = self.warmup_epochs
        if warmup is None:
            warmup = min(defaults.warmup_epochs, math.floor(self.epochs / 10 + 0.5))
        return dataclasses.replace(
            self,
            augmentation=self.augmentation or defaults.augmentation,
            num_views=self.num_views or defaults.num_views,
            optimizer=self.optimizer or defaults.optimizer,
            lr=defaults.lr if self.lr is None else self.lr,
            weight_decay=defaults.weight_decay if self.weight_decay is None else self.weight_decay,
            warmup_epochs=warmup,
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field, before any work is done."""
        cls = method_class(self.method)  # raises on unknown names
        config = self.resolved()
        if config.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {config.epochs}")
        if config.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {config.batch_size}")
        if config.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {config.knn_k}")
        if (
            isinstance(config.linear_aug_epochs, bool)
            or not isinstance(config.linear_aug_epochs, int)
            or config.linear_aug_epochs < 1
        ):
            raise ValueError(f"linear_aug_epochs must be an integer >= 1, got {config.linear_aug_epochs!r}")
        if not config.linear_aug_lr > 0:
            raise ValueError(f"linear_aug_lr must be > 0, got {config.linear_aug_lr!r}")
        if isinstance(config.num_nodes, bool) or not isinstance(config.num_nodes, int) or config.num_nodes < 1:
            raise ValueError(f"num_nodes must be an integer >= 1, got {config.num_nodes!r}")
        if config.checkpoint_every_n_steps < 0:
            raise ValueError(f"checkpoint_every_n_steps must be >= 0, got {config.checkpoint_every_n_steps}")
        if config.knn_every_n_epochs < 0:
            raise ValueError(f"knn_every_n_epochs must be >= 0, got {config.knn_every_n_epochs}")
        if config.augmentation not in augmentations.available():
            raise ValueError(
                f"unknown augmentation {config.augmentation!r}; available: {', '.join(augmentations.available())}"
            )
        try:  # the augmentation's options, on a stand-in image size and statistics
            augmentations.build(
                config.augmentation,
                image_size=config.image_size or 32,
                mean=(0.5,) * 3,
                std=(0.25,) * 3,
                num_views=config.num_views,
                **config.augmentation_options,
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"augmentation_options {config.augmentation_options}: {error}") from None
        check_protocols(config.eval_protocols)
        if config.logger not in LOGGERS:
            raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, got {config.logger!r}")
        if config.logger == "tensorboard" and not _tensorboard_available():
            raise ValueError("logger 'tensorboard' needs the tensorboard package: pip install tensorboard")
        if config.train_images is not None and (
            isinstance(config.train_images, bool) or not isinstance(config.train_images, int) or config.train_images < 2
        ):
            raise ValueError(f"train_images must be an integer >= 2, got {config.train_images!r}")
        for name in ("image_size", "decode_size"):
            value = getattr(config, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 8):
                raise ValueError(f"{name} must be an integer >= 8, got {value!r}")
        if config.data_source not in SOURCES:
            raise ValueError(f"data_source must be one of {', '.join(SOURCES)}, got {config.data_source!r}")
        if config.workers is not None and (isinstance(config.workers, bool) or config.workers < 0):
            raise ValueError(f"workers must be an integer >= 0, got {config.workers!r}")
        if config.resume is not None:
            try:
                checkpoint = resolve_checkpoint(config.resume)
            except ValueError as error:
                raise ValueError(f"cannot resume: {error}") from None
            try:
                torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:  # truncated, or not a checkpoint at all
                raise ValueError(
                    f"cannot resume: checkpoint {str(checkpoint)!r} cannot be read ({str(error).splitlines()[0]}); "
                    "delete it, or give another --out to start afresh"
                ) from None
        if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"accelerator {config.accelerator!r} asks for a CUDA GPU, but torch finds none on this machine "
                f"(torch {torch.__version__}); use --accelerator cpu, or auto to take a GPU where there is one"
            )
        if config.sync_batchnorm and (config.accelerator == "cpu" or not torch.cuda.is_available()):
            raise ValueError("sync_batchnorm needs GPUs (torch's SyncBatchNorm does not run on the CPU)")
        check_writable(self.run_dir())
        unknown = sorted(set(config.method_options) - set(cls.options()))
        if unknown:
            allowed = ", ".join(cls.options()) or "none"
            raise ValueError(
                f"method {config.method!r} does not accept options {', '.join(unknown)}; allowed: {allowed}"
            )
        cls.check_setting(config.supervised, config.num_views)
        optim = OptimConfig(
            config.lr, weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs, optimizer=config.optimizer
        )
        # Build the method once on a stand-in backbone, so that bad option values fail now,
        # not after the data is loaded.
        _construct(cls, config, nn.Identity(), 8, nn.Identity(), num_classes=2, optim=optim)

    def run_dir(self) -> Path:
        """``out``, or ``runs/<timestamp>-<method>``; DDP child processes (which re-run the
        script) get their parent's directory through ``TCL_SSL_RUN_DIR``."""
        if self.out is not None:
            return Path(self.out)
        if RUN_DIR_ENV in os.environ:
            return Path(os.environ[RUN_DIR_ENV])
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{stamp}-{self.method}{'-sup' if self.supervised else ''}"

    @classmethod
    def saved(cls, checkpoint: str | Path) -> PretrainConfig:
        """The configuration of the run a checkpoint (``<run>/checkpoints/*.ckpt``) belongs to."""
        saved = run_config(Path(checkpoint))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names} | {"out": saved["run_dir"]})


def check_writable(directory: Path) -> None:
    """Raise ``ValueError`` unless ``directory`` exists as a writable directory or can be made."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the run directory {str(directory)!r}: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run directory {str(directory)!r}: {str(existing)!r} is not writable")


def resolved_stem(config: PretrainConfig, image_size: int) -> str:
    """The configured stem or, if unset: ``small`` (full resolution, the CIFAR stem) for images
    up to 64 px on a GPU; ``imagenet`` (4x downsampling) for larger images, and on the CPU,
    where the full-resolution stem is ~10x slower."""
    if config.stem is not None:
        return config.stem
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "small" if on_gpu and image_size <= 64 else "imagenet"


def default_precision(accelerator: str) -> str:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class ThroughputMeter(Callback):
    """Counts the training images this process steps through and the time its training loop
    takes (first to last batch, per-epoch validation included)."""

    def __init__(self) -> None:
        self.images = 0
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch[-1]) * trainer.world_size  # (views, labels): one label per image
        self.end = time.perf_counter()

    def images_per_second(self) -> float | None:
        """Training images per second over all processes (``None`` before the first batch ends)."""
        if self.start is None or self.end is None or self.end <= self.start:
            return None
        return self.images / (self.end - self.start)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak memory since :func:`reset_peak_memory`, in MiB: this process's resident set, and the
    CUDA allocator's on ``device`` (``None`` off CUDA)."""
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"host_rss_mib": peak_rss() / 2**20, "cuda_allocated_mib": cuda}


def reset_peak_memory() -> None:
    reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


class ValidationMonitor(Callback):
    """Every ``every_n_epochs`` epochs, logs on the validation split: ``val_knn_top1`` of the
    backbone (train split as the bank) and ``val_online_top1`` of the method's online linear
    probe. Under DDP every process embeds a shard of the images; process 0 computes the figures."""

    def __init__(
        self, data: ImageData, preprocess: torch.nn.Module, k: int, temperature: float, every_n_epochs: int = 1
    ) -> None:
        self.data = data
        self.preprocess = preprocess
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs == 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        backbone = pl_module.backbone
        train = gather_features(backbone, self.data.train, self.preprocess)
        val_raw = gather_features(backbone, self.data.val, self.preprocess, normalize=False)
        if not trainer.is_global_zero:
            return
        knn = knn_accuracy(
            train,
            self.data.train.labels,
            torch.nn.functional.normalize(val_raw, dim=1),
            self.data.val.labels,
            self.data.num_classes,
            k=self.k,
            temperature=self.temperature,
            device=pl_module.device,
        )
        online = online_probe_top1(pl_module, val_raw, self.data.val.labels)
        pl_module.log("val_knn_top1", knn["top1"], prog_bar=True, rank_zero_only=True)
        pl_module.log("val_online_top1", online, prog_bar=False, rank_zero_only=True)


@torch.no_grad()
def online_probe_top1(method: Method, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (percent) of the method's online linear probe on raw backbone features ``(N, F)``."""
    device = next(method.online_classifier.parameters()).device
    _, metrics = method.online_classifier.validation_step((features.to(device), labels.to(device)), 0)
    return 100.0 * float(metrics["val_online_cls_top1"])


def build_method(config: PretrainConfig, data: ImageData) -> Method:
    """The configured method (``config`` resolved) with a fresh backbone and its training augmentation."""
    backbone, feature_dim = build_backbone(config.backbone, data.channels, resolved_stem(config, data.image_size))
    augment = augmentations.build(
        config.augmentation,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        num_views=config.num_views,
        **config.augmentation_options,
    )
    optim = OptimConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
    )
    return _construct(method_class(config.method), config, backbone, feature_dim, augment, data.num_classes, optim)


def _construct(
    cls: type[Method],
    config: PretrainConfig,
    backbone: nn.Module,
    feature_dim: int,
    augment: nn.Module,
    num_classes: int,
    optim: OptimConfig,
) -> Method:
    try:
        return cls(
            backbone,
            feature_dim,
            augment,
            supervised=config.supervised,
            num_classes=num_classes,
            optim=optim,
            **config.method_options,
        )
    except TypeError as error:  # a value of a kind no check of the method's caught
        raise ValueError(
            f"invalid value in options {config.method_options} of method {config.method!r} ({error}); "
            "see the defaults in --list-methods"
        ) from error


def pretrain(config: PretrainConfig, data: ImageData | None = None) -> dict[str, Any]:
    """Run one pretraining job and return its summary (also written to ``summary.json``)."""
    began = time.perf_counter()
    config.validate()
    config = config.resolved()
    if config.resume is not None:
        config = dataclasses.replace(config, resume=str(resolve_checkpoint(config.resume)))
    run_dir = config.run_dir()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if data is None:
        data = load_run_data(config)
    data = data.with_train_images(config.train_images)
    if len(data.train) < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} is larger than the train split ({len(data.train)} images)")
    precision = config.precision or default_precision(config.accelerator)
    method = build_method(config, data)
    preprocess = augmentations.build("eval", image_size=data.image_size, mean=data.mean, std=data.std, num_views=1)

    throughput = ThroughputMeter()
    callbacks: list[Callback] = [
        throughput,
        NonFiniteLossGuard(),
        ResumeState(),
        LastCheckpoint(run_dir / "checkpoints", config.checkpoint_every_n_steps),
    ]
    if config.knn_every_n_epochs:
        callbacks.append(
            ValidationMonitor(data, preprocess, config.knn_k, config.knn_temperature, config.knn_every_n_epochs)
        )
    loggers = build_loggers(config.logger, run_dir)
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        sync_batchnorm=config.sync_batchnorm,
        precision=precision,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=10,
        limit_train_batches=config.limit_train_batches,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = dataclasses.asdict(config) | {
            "run_dir": str(run_dir),
            "precision": precision,
            "stem": resolved_stem(config, data.image_size),
            "method_defaults": method_class(config.method).options(),
            "data": {
                **data.sizes(),
                "classes": data.num_classes,
                "channels": data.channels,
                "image_size": data.image_size,
                "mean": data.mean,
                "std": data.std,
                "streamed": data.streamed,
            },
        }
        write_config(run_dir / "config.json", resolved, config.resume)
    loader = batch_loader(data.train, config.batch_size, shuffle=True, drop_last=True, seed=config.seed)
    reset_peak_memory()
    start = time.perf_counter()
    try:
        trainer.fit(method, train_dataloaders=loader, ckpt_path=config.resume)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)  # a later run in this process gets its own directory
    train_seconds = time.perf_counter() - start
    memory = peak_memory(trainer.strategy.root_device)

    # features: under DDP every process embeds a shard of each split (a collective); then process 0 evaluates
    device = trainer.strategy.root_device
    features = split_features(method.backbone.to(device), data, device)
    pl.seed_everything(config.seed, workers=True, verbose=False)  # the same initial weights as the method's
    random_backbone, _ = build_backbone(config.backbone, data.channels, resolved_stem(config, data.image_size))
    random_features = split_features(random_backbone.to(device), data, device)
    if not trainer.is_global_zero:
        return {}
    settings = EvalSettings(
        knn_k=config.knn_k,
        knn_temperature=config.knn_temperature,
        seed=config.seed,
        linear_aug_epochs=config.linear_aug_epochs,
        linear_aug_lr=config.linear_aug_lr,
    )
    evaluation = evaluate_backbone(
        method.backbone,
        method.feature_dim,
        data,
        tuple(config.eval_protocols),
        settings,
        device,
        accelerator=config.accelerator,
        features=features,
    )
    cheap = tuple(p for p in config.eval_protocols if p in ("knn", "linear")) or ("knn",)
    random_init = evaluate_backbone(
        random_backbone, method.feature_dim, data, cheap, settings, device, features=random_features
    )
    metrics_csvs = metrics_files(run_dir)
    summary = {
        "method": config.method,
        "supervised": config.supervised,
        "dataset": config.dataset,
        "epochs": config.epochs,
        "splits": data.sizes(),
        "val": evaluation.metrics["val"],
        "test": evaluation.metrics["test"],
        "random_init": random_init.metrics,
        "online_probe": online_probe_summary(metrics_csvs, method, evaluation, data),
        "linear_weight_decay": evaluation.linear_weight_decay,
        "train_seconds": train_seconds,
        # data loading (unless the data was handed in), training and evaluation; not the plots
        "wall_seconds": time.perf_counter() - began,
        "images_per_second": throughput.images_per_second(),
        "peak_memory": memory,
        "final_train_loss": _last_metric(trainer, "train_loss_epoch"),
        "metrics_csv": str(metrics_csvs[-1]) if metrics_csvs else None,
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if config.plots:
        write_run_plots(run_dir / "plots", evaluation, data, metrics_csvs, title=f"{config.method} on {config.dataset}")
    return summary


def effective_data_source(config: PretrainConfig) -> str:
    """``config.data_source``, except that a resumed ``auto`` run keeps the source (memory or
    stream) it started with: with ``skip_bad_images`` the two can split differently."""
    if config.resume is None or config.data_source != "auto":
        return config.data_source
    try:
        streamed = run_config(Path(config.resume)).get("data", {}).get("streamed")
    except ValueError:  # a checkpoint without its run's config.json
        streamed = None
    return {True: "stream", False: "memory"}.get(streamed, "auto")


def load_run_data(config: PretrainConfig) -> ImageData:
    """The dataset of a (resolved) configuration, all of its train split (``train_images`` is
    applied by :func:`pretrain`), from :func:`effective_data_source`."""
    return load_dataset(
        config.dataset,
        data_dir=Path(config.data_dir) if config.data_dir else None,
        image_size=config.image_size,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        skip_bad_images=config.skip_bad_images,
        source=effective_data_source(config),
        decode_size=config.decode_size,
        workers=config.workers,
    )


def write_config(path: Path, resolved: dict[str, Any], resume: str | None) -> None:
    """Write the run's resolved configuration to ``path``. A resumed run keeps the record of its
    resumes under ``resumes``: when, from which checkpoint, and each field that changed."""
    resolved = json.loads(json.dumps(resolved))  # JSON's own types, to compare with the file's
    if resume is not None:
        previous = json.loads(path.read_text()) if path.is_file() else None
        changed = (
            None
            if previous is None
            else {
                key: {"was": previous.get(key), "now": value}
                for key, value in resolved.items()
                if key not in ("resume", "resumes") and previous.get(key) != value
            }
        )
        record = {"at": datetime.now().isoformat(timespec="seconds"), "checkpoint": resume, "changed": changed}
        resolved["resumes"] = (previous or {}).get("resumes", []) + [record]
    path.write_text(json.dumps(resolved, indent=2))


def build_loggers(kind: str, run_dir: Path) -> list:
    """Lightning's CSVLogger (always: the summary reads it), plus a TensorBoardLogger for ``tensorboard``."""
    loggers = [CSVLogger(run_dir, name="logs")]
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    return loggers


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def online_probe_summary(metrics_csvs: list[Path], method: Method, evaluation: Evaluation, data: ImageData) -> dict:
    """The online probe's top-1 at the end of training on the validation and test splits, and its
    best validation top-1 over the monitored epochs (all log versions) and that epoch (1-based)."""
    final = {
        f"final_{name}_top1": online_probe_top1(method, evaluation.raw_features[name], data.split(name).labels)
        for name in ("val", "test")
    }
    points = read_epoch_metrics(metrics_csvs).get("val_online_top1", [])
    if not points:
        return final | {"best_val_top1": None, "best_epoch": None}
    best_epoch, best = max(points, key=lambda p: p[1])
    return final | {"best_val_top1": best, "best_epoch": best_epoch + 1}


def _last_metric(trainer: pl.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)
