"""Training throughput: this project's SimCLR path against lightly's documented one and against
the model alone (``tcl-ssl bench train``).

The same images (CIFAR-10 JPEGs, resized where ``image_size`` asks for it; random images when
the JPEGs are not there), the same ResNet-18 (:func:`tcl_ssl.backbones.build_backbone`, the stem
``pretrain`` would choose for this image size and device), the same projection head (lightly's
``SimCLRProjectionHead``, 512-512-128), NT-Xent (t = 0.5), the same batch size, precision and
update (SGD, momentum 0.9, weight decay 1e-4) in every row:

- (a) ours: a data source of uint8 batches (``memory``: :func:`tcl_ssl.data.batch_loader` over
  the in-memory train :class:`~tcl_ssl.data.Split`), the ``simclr`` method of the registry built
  by :func:`tcl_ssl.train.build_method` (its batched on-device augmentation, the two views in one
  backbone pass, its online linear probe; SGD in place of the recipe's LARS, as in the other rows)
  and a Lightning Trainer set up as ``pretrain()`` does, less what a benchmark has no use for: no
  kNN monitor, no ``last.ckpt`` callback, no CSV logger (the ``NonFiniteLossGuard`` and
  ``ResumeState`` callbacks stay, and so do the method's ``self.log`` calls);
- (b) lightly's documented pipeline (``examples/pytorch_lightning/simclr.py`` in lightly-ai/lightly):
  a torchvision-style dataset that makes a PIL image per item (as ``torchvision.datasets.CIFAR10``
  does), ``lightly.transforms.SimCLRTransform`` (the settings of ``tcl-ssl bench augment``) per
  image in ``num_workers`` DataLoader worker processes (persistent, so that the short epochs of a
  few thousand images do not restart them), a LightningModule that forwards each view on its
  own, as the example does, and a Lightning Trainer (the example's head is 512-2048-2048 and its
  SGD has no momentum; here head and update are the other rows');
- (c) the floor: backbone + head forward, NT-Xent, backward and the SGD step on ready float views
  ``(2 B, C, H, W)`` (one backbone pass, as ours), no data, no augmentation, no Trainer.

Every row is measured in each precision asked for (default: the one ``pretrain`` would pick), and
compared with (b) and (c) in the same precision; (c) also trains in the memory format of (a)
(channels-last where :func:`tcl_ssl.methods.trains_channels_last` says so). With ``compile``,
rows (a) and (c) are measured again with the backbone wrapped in ``torch.compile`` (each compared
with (c) compiled); the seconds its first steps took beyond the timed pace are its ``startup_s``
(the compile time; a later compiled row reuses the kernels compiled before it in the process).

Every Trainer runs with ``enable_progress_bar=False``, ``logger=False``,
``enable_checkpointing=False``, ``num_sanity_val_steps=0``, ``enable_model_summary=False``, one
device. Throughput is images per second (one image = one sample, giving two views) over
``steps`` optimiser steps after ``warmup`` steps, measured at step ends (epoch ends included);
with ``rounds`` > 1 all rows are measured that many times in turn and each reports its best
round (on a shared machine, other load then spoils a round rather than one row).
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the row; on the CPU the peak
resident set size of this process over its size at the row's start (after returning freed
memory to the system), which leaves out (b)'s worker processes.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from augmentations.samples import DEFAULT_IMAGE_ROOT
from tcl_ssl.backbones import build_backbone
from tcl_ssl.checkpointing import NonFiniteLossGuard, ResumeState
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import (
    FileSplit,
    ImageData,
    Split,
    assemble,
    batch_loader,
    decode_images,
    default_workers,
    list_image_folder,
)
from tcl_ssl.methods import trains_channels_last
from tcl_ssl.process_memory import current_rss, peak_rss, reset_peak_rss
from tcl_ssl.safe_io import write_json
from tcl_ssl.train import build_method, default_precision, resolved_stem

__all__ = [
    "Settings",
    "Measurement",
    "SOURCES",
    "load_data",
    "rate_ours",
    "rate_lightly",
    "rate_floor",
    "run",
    "format_table",
    "ratio_lines",
    "main",
]

log = logging.getLogger(__name__)

#: the same update in every row: SGD at lightly's example's lr, with our momentum and weight decay
LR, MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 1e-4
TEMPERATURE = 0.5
HEAD_OUTPUT = 128
SYNTHETIC = "random"
ROW_OURS = "(a) ours"
ROW_LIGHTLY = "(b) lightly"
ROW_FLOOR = "(c) floor"
#: the precisions the benchmark measures (those whose autocast the floor row reproduces)
BENCH_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")

#: ``make_loader(train, batch_size, seed)``: a loader of uint8 ``(images, labels)`` batches
LoaderFactory = Callable[[Any, int, int], Iterable]


@dataclass(frozen=True)
class Settings:
    """What the rows of one precision share: ``batch_size`` images per step, ``steps`` timed steps
    after ``warmup`` untimed ones, on ``device`` at Lightning ``precision`` (``32-true``,
    ``bf16-mixed`` or ``16-mixed``), the ``stem`` of the backbone, seeded with ``seed``; with
    ``compile``, the backbone wrapped in ``torch.compile`` (rows (a) and (c))."""

    batch_size: int
    steps: int
    warmup: int
    device: torch.device
    precision: str
    stem: str
    seed: int = 0
    compile: bool = False


@dataclass(frozen=True)
class Measurement:
    """Images per second over the timed steps, peak memory (bytes, see the module docstring) and
    the seconds the warmup steps took beyond ``warmup`` steps at the timed pace (``startup_s``:
    one-time costs such as ``torch.compile``'s)."""

    images_per_s: float
    peak_bytes: int
    startup_s: float = 0.0


# ----------------------------------------------------------------------------- data


def load_data(
    num_images: int, image_size: int, dataset: str | Path | None = None
) -> tuple[ImageData, str, list[Path] | None]:
    """``num_images`` RGB images and labels as an :class:`ImageData` (only its train split is used),
    where they came from, and their files (``None`` for random images).

    ``dataset``: a ``root/<class>/<image>`` folder (``num_images`` files spread evenly over it,
    decoded and resized as ``tcl-ssl pretrain`` does); ``"random"`` for random images and labels;
    ``None`` for the CIFAR-10 JPEG folder when present, else random images.
    """
    if dataset is None:
        has_images = DEFAULT_IMAGE_ROOT.is_dir() and any(DEFAULT_IMAGE_ROOT.glob("*/*.jpg"))
        dataset = DEFAULT_IMAGE_ROOT if has_images else SYNTHETIC
    if str(dataset) == SYNTHETIC:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (num_images, 3, image_size, image_size), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, 10, (num_images,), generator=generator)
        labels[: min(num_images, 10)] = torch.arange(min(num_images, 10))  # every class present
        source = f"{num_images} random images"
        paths = None
    else:
        root = Path(dataset)
        files, all_labels, _ = list_image_folder(root)  # raises a clear ValueError for a bad folder
        picked = [i * len(files) // num_images for i in range(num_images)]
        paths = [files[i] for i in picked]
        images, _ = decode_images(paths, image_size)
        labels = torch.tensor([all_labels[i] for i in picked], dtype=torch.long)
        source = f"{num_images} images from {root}" + (" (files repeated)" if num_images > len(files) else "")
    train = Split(images, labels)
    few = train.subset(torch.arange(min(num_images, 16)))
    return assemble("bench", train, few, few), source, paths


def memory_loader(train: Split | FileSplit, batch_size: int, seed: int) -> Iterable:
    """``pretrain()``'s loader over a split (shuffled, full batches): in memory, or streamed."""
    return batch_loader(train, batch_size, shuffle=True, drop_last=True, seed=seed)


def _memory_source(data: ImageData, files: list[Path] | None) -> tuple[Any, LoaderFactory]:
    return data.train, memory_loader


#: data sources of row (a): ``name -> source(data, files) -> (train object, loader factory)``, where
#: ``files`` are the image files of ``data.train`` in order (``None`` for random images); each
#: source gives a row "(a) ours, <name>".
def _stream_source(data: ImageData, files: list[Path] | None) -> tuple[Any, LoaderFactory]:
    """The same images as a streamed split: DataLoader workers (as many as ``pretrain`` starts)
    read and decode their files every epoch."""
    if files is None:
        raise ValueError("the stream source reads image files: give --dataset a folder (random images have none)")
    split = FileSplit.from_paths(files, data.train.labels.tolist(), data.train.image_size, workers=default_workers())
    return split, memory_loader


SOURCES: dict[str, Callable[[ImageData, list[Path] | None], tuple[Any, LoaderFactory]]] = {
    "memory": _memory_source,
    "stream": _stream_source,
}


# ----------------------------------------------------------------------------- measuring


class _StepTimer(Callback):
    """Records the time at the start of training and at the end of optimiser step ``warmup`` and
    ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup = warmup
        self.steps = steps
        self.began: float | None = None
        self.start: float | None = None
        self.end: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.began = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step in (self.warmup, self.warmup + self.steps):
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            now = time.perf_counter()
            if trainer.global_step == self.warmup:
                self.start = now
            else:
                self.end = now

    def images_per_s(self, batch_size: int) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError("the run ended before its timed steps did (too few batches?)")
        return self.steps * batch_size / (self.end - self.start)

    def startup_s(self) -> float:
        """Seconds of the warmup steps beyond ``warmup`` steps at the timed pace."""
        if self.began is None or self.start is None or self.end is None:
            raise RuntimeError("the run ended before its timed steps did (too few batches?)")
        return max(self.start - self.began - self.warmup * (self.end - self.start) / self.steps, 0.0)

    def measurement(self, batch_size: int, peak_bytes: int) -> Measurement:
        return Measurement(self.images_per_s(batch_size), peak_bytes, self.startup_s())


class _PeakMemory:
    """Peak memory of the work done inside ``with`` (see the module docstring); ``.peak_bytes`` after it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._before = 0

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:  # give freed heap memory back, so that the row's own peak shows
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        if not reset_peak_rss():  # then the peak is the process's lifetime peak: an upper bound of the row's
            log.warning("cannot reset the peak RSS (/proc/self/clear_refs); peaks include earlier work")
        self._before = current_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = max(peak_rss() - self._before, 0)


def _trainer(settings: Settings, callbacks: list[Callback]) -> pl.Trainer:
    """A Lightning Trainer for ``warmup + steps`` steps with nothing a benchmark does not need."""
    return pl.Trainer(
        max_steps=settings.warmup + settings.steps,
        accelerator=settings.device.type,
        devices=1,
        precision=settings.precision,  # type: ignore[arg-type]  # a Lightning precision name, checked by Lightning
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )


# ----------------------------------------------------------------------------- the rows


def rate_ours(data: ImageData, train: Any, make_loader: LoaderFactory, settings: Settings) -> Measurement:
    """Row (a): ``make_loader(train, batch_size, seed)``'s uint8 batches through the registry's
    ``simclr`` method (built from ``data``'s image size, channels and statistics) and a Lightning
    Trainer configured as ``pretrain()`` configures it (see the module docstring)."""
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    config = PretrainConfig.build(
        method="simclr",
        batch_size=settings.batch_size,
        accelerator=settings.device.type,
        devices=1,
        stem=settings.stem,
        optimizer="sgd",
        lr=LR * 256 / settings.batch_size,
        weight_decay=WEIGHT_DECAY,
        precision=settings.precision,
        knn_every=0,
        plots=False,
        seed=settings.seed,
    ).resolved()
    timer = _StepTimer(settings.warmup, settings.steps)
    with _PeakMemory(settings.device) as memory:
        method = build_method(config, data)
        if settings.compile:
            method.backbone = torch.compile(method.backbone)  # type: ignore[assignment]
        loader = make_loader(train, settings.batch_size, settings.seed)
        trainer = _trainer(settings, [NonFiniteLossGuard(), ResumeState(), timer])
        trainer.fit(method, train_dataloaders=loader)
        del method, loader, trainer
    return timer.measurement(settings.batch_size, memory.peak_bytes)


class PILImages(Dataset):
    """A torchvision-style dataset as ``torchvision.datasets.CIFAR10`` is one: HWC uint8 arrays,
    a PIL image made per item and passed through ``transform``; items ``(transformed, label)``."""

    def __init__(self, split: Split, transform: Callable[[Image.Image], Any]) -> None:
        self.data = split.images.numpy().transpose(0, 2, 3, 1)  # a view, as CIFAR10's array
        self.targets = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


class LightlySimCLR(pl.LightningModule):
    """lightly's SimCLR example module with this benchmark's backbone and head widths and update."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, feature_dim, HEAD_OUTPUT)
        self.criterion = NTXentLoss(temperature=TEMPERATURE)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_step(self, batch: Any, batch_index: int) -> Tensor:
        x0, x1 = batch[0]
        return self.criterion(self.forward(x0), self.forward(x1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def lightly_transform(data: ImageData) -> SimCLRTransform:
    """``SimCLRTransform`` with the settings of ``tcl-ssl bench augment`` (ours' ``simclr`` recipe):
    jitter strength 0.5, blur p 0.5 above 32 px and none at 32 px, the data's normalisation."""
    return SimCLRTransform(
        input_size=data.image_size,
        cj_strength=0.5,
        gaussian_blur=0.0 if data.image_size <= 32 else 0.5,
        normalize={"mean": list(data.mean), "std": list(data.std)},
    )


def rate_lightly(data: ImageData, settings: Settings, num_workers: int) -> Measurement:
    """Row (b): lightly's documented pipeline on ``data.train`` with ``num_workers`` DataLoader workers."""
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    timer = _StepTimer(settings.warmup, settings.steps)
    if not isinstance(data.train, Split):
        raise ValueError("lightly's pipeline row reads images held in memory (a Split), not streamed files")
    with _PeakMemory(settings.device) as memory:
        backbone, feature_dim = build_backbone("resnet18", data.channels, settings.stem)
        model = LightlySimCLR(backbone, feature_dim)
        loader = DataLoader(
            PILImages(data.train, lightly_transform(data)),
            batch_size=settings.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
        trainer = _trainer(settings, [timer])
        trainer.fit(model, train_dataloaders=loader)
        del model, loader, trainer
    return timer.measurement(settings.batch_size, memory.peak_bytes)


def rate_floor(data: ImageData, settings: Settings) -> Measurement:
    """Row (c): forward (backbone + head on both views in one pass), NT-Xent, backward and the SGD
    step on ready float views, under the same autocast as the Trainer's precision and in the
    memory format the methods train in (:func:`~tcl_ssl.methods.trains_channels_last`)."""
    torch.manual_seed(settings.seed)
    device, batch = settings.device, settings.batch_size
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(settings.precision)
    with _PeakMemory(device) as memory:
        backbone, feature_dim = build_backbone("resnet18", data.channels, settings.stem)
        compiled = cast(nn.Module, torch.compile(backbone)) if settings.compile else backbone
        model = nn.Sequential(compiled, SimCLRProjectionHead(feature_dim, feature_dim, HEAD_OUTPUT)).to(device)
        criterion = NTXentLoss(temperature=TEMPERATURE)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        views = torch.randn(2 * batch, data.channels, data.image_size, data.image_size, device=device)
        if trains_channels_last(device, settings.precision):  # as the methods train (row (a))
            model.to(memory_format=torch.channels_last)
            views = views.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                z0, z1 = model(views).chunk(2)
            loss = criterion(z0.float(), z1.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        began = time.perf_counter()
        for _ in range(settings.warmup):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(settings.steps):
            step()
        sync()
        seconds = time.perf_counter() - start
    startup = max(start - began - settings.warmup * seconds / settings.steps, 0.0)
    return Measurement(settings.steps * batch / seconds, memory.peak_bytes, startup)


# ----------------------------------------------------------------------------- the benchmark


def run(
    num_images: int = 4096,
    image_size: int = 32,
    batch_size: int = 256,
    steps: int = 300,
    warmup: int = 5,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    dataset: str | Path | None = None,
    sources: Sequence[str] = ("memory",),
    rounds: int = 1,
    seed: int = 0,
    precisions: Sequence[str] | None = None,
    compile: bool = False,
) -> list[dict]:
    """Measure rows (a) (one per data source in ``sources``), (b) and (c) in each precision; with
    ``compile`` also (a) and (c) with ``torch.compile`` of the backbone, in each precision.

    Args:
        num_images: images in the train split (at least one batch; epochs repeat over them).
        image_size: side in pixels the images are resized to (CIFAR's 32 px: no resizing).
        batch_size: images per step (each giving two views).
        steps: timed optimiser steps per row, after ``warmup`` untimed ones.
        warmup: untimed steps first (>= 1: the first step pays one-time costs).
        device: ``"cpu"`` or ``"cuda"`` (default: ``cuda`` when available).
        num_workers: DataLoader workers of row (b) (default: the CPU count).
        dataset: see :func:`load_data`.
        sources: row (a)'s data sources, names in :data:`SOURCES`.
        rounds: how many times all rows are measured, one after the other (c, a, b, c, a, b, ...);
            each row reports its best round, as a benchmark on a shared machine should.
        seed: seed of every row.
        precisions: Lightning precisions, each one of :data:`BENCH_PRECISIONS` (default: the
            device's, :func:`tcl_ssl.train.default_precision`); every row is measured in each.
        compile: add the rows "(a) ours, <source>, compiled" and "(c) floor, compiled".

    Returns:
        One dict per row and precision: ``row``, ``precision``, ``compiled``, ``images_per_s``
        (its best round), ``rounds`` (images/s of each round), ``vs_lightly`` and ``vs_floor``
        (its throughput over that of (b) in the same precision and of (c) in the same precision,
        compiled or not as the row), ``startup_s`` (the seconds of its warmup steps beyond their
        share at the timed pace, in its best round: the compile time of a compiled row),
        ``peak_bytes`` (the largest of its rounds), ``memory`` (what the peak counts), ``images``
        (where the images came from), ``device``, ``stem``, ``steps``, ``warmup``,
        ``num_rounds``, ``batch_size``, ``image_size``, ``num_workers``.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    if num_images < batch_size:
        raise ValueError(f"num_images must be >= batch_size ({batch_size}), got {num_images}")
    if steps < 1 or warmup < 1 or rounds < 1:
        raise ValueError(f"steps, warmup and rounds must be >= 1, got steps={steps}, warmup={warmup}, rounds={rounds}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    unknown = [name for name in sources if name not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown data sources {unknown or list(sources)}; available: {', '.join(SOURCES)}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed: torch.device | None = torch.device(device)
    except RuntimeError:
        parsed = None
    cuda_missing = parsed is not None and parsed.type == "cuda" and not torch.cuda.is_available()
    if parsed is None or parsed.type not in ("cpu", "cuda") or cuda_missing:
        raise ValueError(f"device must be 'cpu' or an available 'cuda' device, got {str(device)!r}")
    device = parsed
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    stem = resolved_stem(PretrainConfig.build(accelerator=device.type), image_size)
    precisions = list(precisions) if precisions is not None else [default_precision(device.type)]
    bad = [p for p in precisions if p not in BENCH_PRECISIONS]
    if bad or not precisions or len(set(precisions)) < len(precisions):
        raise ValueError(
            f"precisions must be distinct names among {', '.join(BENCH_PRECISIONS)}, got {list(precisions)}"
        )

    data, images, files = load_data(num_images, image_size, dataset)
    log.info(
        "bench train: %s, %s, %s, stem %s, batch %d, %d + %d steps",
        images,
        device,
        ", ".join(precisions),
        stem,
        batch_size,
        warmup,
        steps,
    )

    ours = {f"{ROW_OURS}, {name}": SOURCES[name](data, files) for name in sources}
    # (row, precision, compiled) -> how to measure it once
    measures: dict[tuple[str, str, bool], Callable[[], Measurement]] = {}
    for precision in precisions:
        for compiled in (False, True) if compile else (False,):
            settings = Settings(batch_size, steps, warmup, device, precision, stem, seed, compiled)
            suffix = ", compiled" if compiled else ""
            measures[(ROW_FLOOR + suffix, precision, compiled)] = functools.partial(rate_floor, data, settings)
            for row, (train, make_loader) in ours.items():
                measures[(row + suffix, precision, compiled)] = functools.partial(
                    rate_ours, data, train, make_loader, settings
                )
            if not compiled:
                measures[(ROW_LIGHTLY, precision, False)] = functools.partial(rate_lightly, data, settings, num_workers)
    rounds_of: dict[tuple[str, str, bool], list[Measurement]] = {key: [] for key in measures}
    for number in range(rounds):  # alternating, so that a burst of other load hits one round, not one row
        log.info("bench train: round %d of %d", number + 1, rounds)
        for key, measure in measures.items():
            rounds_of[key].append(measure())
    best = {key: max(ms, key=lambda m: m.images_per_s) for key, ms in rounds_of.items()}

    memory = "max_memory_allocated" if device.type == "cuda" else "peak RSS increase of this process"
    rows: list[dict[str, Any]] = []
    for key, m in best.items():
        row, precision, compiled = key
        lightly = best[(ROW_LIGHTLY, precision, False)]
        floor = best[(ROW_FLOOR + (", compiled" if compiled else ""), precision, compiled)]
        rows.append(
            {
                "row": row,
                "precision": precision,
                "compiled": compiled,
                "images_per_s": m.images_per_s,
                "rounds": [r.images_per_s for r in rounds_of[key]],
                "vs_lightly": m.images_per_s / lightly.images_per_s,
                "vs_floor": m.images_per_s / floor.images_per_s,
                "startup_s": m.startup_s,
                "peak_bytes": max(r.peak_bytes for r in rounds_of[key]),
                "memory": memory
                + (
                    f", without its {num_workers} workers"
                    if row == ROW_LIGHTLY and num_workers and device.type == "cpu"
                    else ""
                ),
                "images": images,
                "device": str(device),
                "stem": stem,
                "steps": steps,
                "warmup": warmup,
                "num_rounds": rounds,
                "batch_size": batch_size,
                "image_size": image_size,
                "num_workers": num_workers,
            }
        )
    order = {ROW_OURS: 0, ROW_LIGHTLY: 1, ROW_FLOOR: 2}
    rows.sort(
        key=lambda r: (
            precisions.index(r["precision"]),
            r["compiled"],
            next(rank for prefix, rank in order.items() if r["row"].startswith(prefix)),
        )
    )
    return rows


ROW_TITLES = {
    ROW_OURS: "batched simclr augmentation on the device, registry `simclr`, Lightning",
    ROW_LIGHTLY: "SimCLRTransform per PIL image in {workers} DataLoader workers, Lightning",
    ROW_FLOOR: "backbone + head forward/backward + SGD on ready views",
}
COMPILED_TITLE = "; backbone in torch.compile"


def _title(row: dict) -> str:
    for prefix, title in ROW_TITLES.items():
        if row["row"].startswith(prefix):
            return f"{row['row']}: {title.format(workers=row['num_workers'])}" + (
                COMPILED_TITLE if row["compiled"] else ""
            )
    return row["row"]


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`run`'s rows: row, precision, images/s, x (b), x (c) (both in the
    row's precision), startup seconds, peak memory (MiB)."""
    lines = [
        "| row | precision | images/s | x (b) | x (c) | startup s | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {_title(row)} | {row['precision']} | {row['images_per_s']:,.1f} | {row['vs_lightly']:.2f} "
        f"| {row['vs_floor']:.2f} | {row['startup_s']:,.1f} | {row['peak_bytes'] / 2**20:,.0f} ({row['memory']}) |"
        for row in rows
    ]
    return "\n".join(lines)


def ratio_lines(rows: Sequence[dict]) -> list[str]:
    """One line per row (a): its throughput over (b)'s and (c)'s in the same precision; and, for
    each precision after the first, each row's throughput over the same row in the first."""
    lines = [
        f"{row['row']} [{row['precision']}]: {row['vs_lightly']:.2f}x lightly's pipeline (b), "
        f"{row['vs_floor']:.2f}x the floor (c)" + (" (compiled)" if row["compiled"] else "")
        for row in rows
        if row["row"].startswith(ROW_OURS)
    ]
    first = rows[0]["precision"]
    baseline = {row["row"]: row["images_per_s"] for row in rows if row["precision"] == first}
    for precision in dict.fromkeys(row["precision"] for row in rows if row["precision"] != first):
        same = [row for row in rows if row["precision"] == precision and row["row"] in baseline]
        lines.append(
            f"{precision} over {first}: "
            + ", ".join(f"{row['row']} {row['images_per_s'] / baseline[row['row']]:.2f}x" for row in same)
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl bench train``: run the benchmark, print the table and the ratios of (a)."""
    parser = argparse.ArgumentParser(prog="tcl-ssl bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="PATH",
        help=f"image folder root/<class>/<image>, or 'random' (default: {DEFAULT_IMAGE_ROOT} "
        "when present, else random images)",
    )
    parser.add_argument("--num-images", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=32, help="pixels; above 32 CIFAR images are upscaled")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure all rows this many times in turn and report each row's best round",
    )
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers of lightly's row (default: the CPU count)"
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        choices=list(SOURCES),
        help="data sources of our row(s) (default: memory, and stream for an image folder)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=list(BENCH_PRECISIONS),
        help="Lightning precision(s); every row is measured in each (default: the device's, as pretrain's)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add rows (a) and (c) with torch.compile of the backbone (its compile time in 'startup s')",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows to PATH as JSON")
    args = parser.parse_args(argv)
    if args.sources is None:
        args.sources = ["memory"] if str(args.dataset) == SYNTHETIC else ["memory", "stream"]

    rows = run(
        args.num_images,
        args.image_size,
        args.batch_size,
        args.steps,
        args.warmup,
        args.device,
        args.num_workers,
        args.dataset,
        args.sources,
        args.rounds,
        precisions=args.precision,
        compile=args.compile,
    )
    if args.json is not None:
        write_json(args.json, rows)
    first = rows[0]
    precisions = ", ".join(dict.fromkeys(row["precision"] for row in rows))
    print(
        f"images: {first['images']}, {first['image_size']} px; batch {first['batch_size']}; ResNet-18 "
        f"({first['stem']} stem); {first['device']}, {precisions}; {first['warmup']} + {first['steps']} "
        f"steps per row and round, best of {first['num_rounds']} round(s); {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end; "
        f"torch {torch.__version__}, pytorch_lightning {pl.__version__}"
    )
    print(format_table(rows))
    if first["num_rounds"] > 1:
        print(
            "images/s of each round: "
            + "; ".join(
                f"{row['row']} [{row['precision']}] " + ", ".join(f"{rate:,.1f}" for rate in row["rounds"])
                for row in rows
            )
        )
    for line in ratio_lines(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
