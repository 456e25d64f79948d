"""What a run measures while it trains: throughput, peak memory, and the validation kNN and
online-probe figures every few epochs."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from tcl_ssl.data import ImageData
from tcl_ssl.evaluation import knn_accuracy
from tcl_ssl.evaluation.features import gather_features
from tcl_ssl.methods import Method
from tcl_ssl.process_memory import peak_rss, reset_peak_rss
from tcl_ssl.runs import PeakMemory

__all__ = ["ThroughputMeter", "ValidationMonitor", "online_probe_top1", "peak_memory", "reset_peak_memory"]


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


def peak_memory(device: torch.device) -> PeakMemory:
    """Peak memory since :func:`reset_peak_memory`, in MiB: this process's resident set, and the
    CUDA allocator's on ``device`` (``None`` off CUDA)."""
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return PeakMemory(host_rss_mib=peak_rss() / 2**20, cuda_allocated_mib=cuda)


def reset_peak_memory() -> None:
    """Start :func:`peak_memory`'s measurement now."""
    reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


class ValidationMonitor(Callback):
    """Every ``every_n_epochs`` epochs, logs on the validation split: ``val_knn_top1`` of the
    backbone (train split as the bank) and ``val_online_top1`` of the method's online linear
    probe. Under DDP every process embeds a shard of the images; process 0 computes the figures.

    Args:
        data: the run's dataset.
        preprocess: the evaluation transform (uint8 images to normalised float views).
        k: neighbours of the kNN classifier.
        temperature: the kNN vote temperature.
        every_n_epochs: epochs between checks (0: never).
    """

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
        assert isinstance(pl_module, Method)
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
    """Top-1 (percent) of the method's online linear probe on raw backbone features ``(N, F)``
    with labels ``(N,)``."""
    device = next(method.online_classifier.parameters()).device
    _, metrics = method.online_classifier.validation_step((features.to(device), labels.to(device)), 0)
    return 100.0 * float(metrics["val_online_cls_top1"])
