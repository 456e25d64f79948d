"""A synthetic CIFAR-10-sized image folder, written without a download
(``python -m tcl_ssl.bench.synthetic_folder ROOT``), for a ``tcl-ssl pretrain`` run whose
throughput is the figure (the GPU check, ``scripts/gpu_check.sh``).

Layout: ``ROOT/train/c<k>/<i>.png`` and ``ROOT/test/c<k>/<i>.png`` (``tcl-ssl pretrain --dataset
ROOT`` splits validation off train), RGB, ``size`` x ``size`` pixels. Each class has its own
colour and stripe orientation, under per-image noise and a random shift, so that a short run has
something to learn; the images are not natural ones and the accuracy of a run on them means
little. PNG files are written by ``processes`` worker processes (torchvision's ``write_png``) into a
hidden ``.<split>.partial`` folder that is renamed to ``<split>`` once complete.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.io import write_png

__all__ = ["class_images", "write_folder", "main"]


def class_images(label: int, count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` uint8 ``(count, 3, size, size)`` images of class ``label`` (a colour and a stripe
    orientation per class; noise and a shift per image), the same for the same arguments."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + label)
    classes = torch.Generator().manual_seed(label)
    colour = torch.rand(3, 1, 1, generator=classes) * 160 + 48
    angle = torch.rand((), generator=classes) * torch.pi
    coords = torch.arange(size, dtype=torch.float32)
    along = coords[None, :] * torch.cos(angle) + coords[:, None] * torch.sin(angle)  # (size, size)
    phase = torch.rand(count, 1, 1, generator=generator) * 2 * torch.pi
    stripes = torch.sin(along[None] * (2 * torch.pi / 8) + phase)[:, None]  # (count, 1, size, size)
    noise = torch.randn(count, 3, size, size, generator=generator) * 24
    images = colour[None] + 40 * stripes + noise
    return images.clamp(0, 255).to(torch.uint8)


def _write_chunk(job: tuple[str, int, int, int, int, int]) -> int:
    """Write images ``start .. start + count`` of one class into ``directory``; returns the count."""
    directory, label, start, count, size, seed = job
    images = class_images(label, count, size, seed * 7919 + start)
    for offset, image in enumerate(images):
        write_png(image, os.path.join(directory, f"{start + offset:05d}.png"))
    return count


def write_folder(
    root: str | Path,
    train: int = 50_000,
    test: int = 10_000,
    classes: int = 10,
    size: int = 32,
    seed: int = 0,
    processes: int | None = None,
) -> dict[str, int]:
    """Write ``train`` and ``test`` images (spread evenly over ``classes``) under ``root``.

    Args:
        root: the folder to create; it must not hold a ``train`` or ``test`` folder yet.
        train: train images (CIFAR-10: 50,000).
        test: test images (CIFAR-10: 10,000).
        classes: classes, ``c0`` .. ``c<classes-1>``.
        size: image side in pixels.
        seed: seed of the images.
        processes: worker processes (default: the CPU count).

    Returns:
        ``{"train": n, "test": m}``: the images written per split.

    Raises:
        ValueError: for counts below one image per class, a size below 8 px or a ``root`` that
            already holds the splits.
    """
    root = Path(root)
    if classes < 2 or train < classes or test < classes:
        raise ValueError(f"need classes >= 2 and train, test >= classes, got {classes=}, {train=}, {test=}")
    if size < 8:
        raise ValueError(f"size must be >= 8 px, got {size}")
    for split in ("train", "test"):
        if (root / split).exists():
            raise ValueError(f"{str(root / split)!r} exists already; give an empty folder")
    jobs = []
    written = {}
    partial = {split: root / f".{split}.partial" for split in ("train", "test")}
    for split, total, split_seed in (("train", train, seed), ("test", test, seed + 1)):
        written[split] = 0
        shutil.rmtree(partial[split], ignore_errors=True)  # left by an interrupted run
        for label in range(classes):
            directory = partial[split] / f"c{label}"
            directory.mkdir(parents=True)
            count = total // classes + (1 if label < total % classes else 0)
            written[split] += count
            chunk = 1000
            jobs += [
                (str(directory), label, start, min(chunk, count - start), size, split_seed)
                for start in range(0, count, chunk)
            ]
    processes = processes or os.cpu_count() or 1
    if processes == 1:
        for job in jobs:
            _write_chunk(job)
    else:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(jobs))) as pool:
            pool.map(_write_chunk, jobs)
    for split, folder in partial.items():  # each split appears whole, or not at all
        os.replace(folder, root / split)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tcl_ssl.bench.synthetic_folder ROOT [--train N] [--test N] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m tcl_ssl.bench.synthetic_folder", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", help="folder to write (created)")
    parser.add_argument("--train", type=int, default=50_000, help="train images (default: CIFAR-10's 50,000)")
    parser.add_argument("--test", type=int, default=10_000, help="test images (default: CIFAR-10's 10,000)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=None, help="writing processes (default: the CPU count)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        written = write_folder(args.root, args.train, args.test, args.classes, args.size, args.seed, args.processes)
    except ValueError as error:
        parser.error(str(error))
    print(
        f"wrote {written['train']:,} train and {written['test']:,} test images ({args.classes} classes, "
        f"{args.size} px) under {args.root} in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
