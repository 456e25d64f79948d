"""Augmentation throughput: the batched ``simclr`` pipeline against lightly's per-image transform
(``tcl-ssl bench augment``).

For each image size the same uint8 images (CIFAR-10 JPEGs, upscaled where the size asks for it;
random images when the JPEGs are not there) are turned into two SimCLR views by:

- ours: ``augmentations.build("simclr", ...)`` on uint8 batches of ``batch_size``, one batched
  kornia call per view (conversion to float included), in this process, with 1 torch thread (the
  CPU budget of lightly per image) and with torch's default thread count;
- lightly per image: ``lightly.transforms.SimCLRTransform`` with the same settings (input size,
  jitter strength 0.5, blur p 0.5 above 32 px and none at 32 px, same normalisation), called on
  each PIL image in this process;
- lightly DataLoader: the same transform in a ``torch.utils.data.DataLoader`` with 2 worker
  processes and ``batch_size``, as a training job would feed a GPU.

With CUDA, ours is also timed on the GPU (batches already there) and as a ``torch.compile``-d
pipeline. Throughput is input images per second (each giving two views), the best of
``REPEATS`` timed passes over all images after a warm-up; only full batches are used. Each row's
``x lightly`` columns are its throughput over the two lightly rows'. On a shared machine the
multi-threaded row suffers most from other load (threads wait for each other at every op).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import torch
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_pil_image

import augmentations
from augmentations.samples import CIFAR10_MEAN, CIFAR10_STD, load_images
from tcl_ssl.safe_io import write_json

__all__ = ["run", "choice_cost", "format_table", "main"]

REPEATS = 5
LOADER_WORKERS = 2
OURS = "ours: augmentations simclr, batched"


class _TransformedImages(Dataset):
    """PIL images with a per-image transform, for the DataLoader row."""

    def __init__(self, images: Sequence[Image.Image], transform: Callable[[Image.Image], list[torch.Tensor]]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        return self.transform(self.images[index])


def _best_rate(num_images: int, one_pass: Callable[[], None], sync: Callable[[], None] = lambda: None) -> float:
    """Best images/second over ``REPEATS`` timed calls of ``one_pass`` (which handles ``num_images``)."""
    best = 0.0
    for _ in range(REPEATS):
        sync()
        start = time.perf_counter()
        one_pass()
        sync()
        best = max(best, num_images / (time.perf_counter() - start))
    return best


def _rate_batched(
    pipeline: Callable, images: torch.Tensor, batch_size: int, device: torch.device, threads: int | None = None
) -> float:
    """Images/second of ``pipeline`` on uint8 batches already on ``device``; ``threads``: torch CPU threads."""
    batches = [batch.to(device) for batch in images.split(batch_size)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        for batch in batches[:2]:  # warm-up (and compilation)
            pipeline(batch)

        def one_pass() -> None:
            for batch in batches:
                pipeline(batch)

        return _best_rate(len(images), one_pass, sync)
    finally:
        torch.set_num_threads(default_threads)


def _rate_per_image(transform: Callable, images: Sequence[Image.Image]) -> float:
    """Images/second of ``transform`` called on each PIL image in this process."""
    for image in images[:16]:
        transform(image)

    def one_pass() -> None:
        for image in images:
            transform(image)

    return _best_rate(len(images), one_pass)


def _rate_loader(transform: Callable, images: Sequence[Image.Image], batch_size: int) -> float:
    """Images/second of ``transform`` run by ``LOADER_WORKERS`` DataLoader workers, in batches."""
    dataset = _TransformedImages(images, transform)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=LOADER_WORKERS, persistent_workers=True)

    def one_pass() -> None:
        for _ in loader:
            pass

    one_pass()  # warm-up: starts the workers
    return _best_rate(len(images), one_pass)


def run(
    image_sizes: Sequence[int] = (32, 96),
    num_images: int = 1024,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> list[dict]:
    """Measure the three pipelines (and the GPU ones with CUDA) at each image size.

    Args:
        image_sizes: output sides in pixels; the images are resized to each.
        num_images: images per size, rounded down to whole batches.
        batch_size: images per batch for ``ours`` and the DataLoader.
        device: where to time ``ours`` besides the CPU: ``"cuda"`` (default when available) or
            ``"cpu"`` for the CPU rows only.

    Returns:
        One dict per row: ``image_size``, ``pipeline``, ``device``, ``images_per_s``,
        ``vs_lightly`` and ``vs_lightly_loader`` (its throughput over theirs), ``images``.
    """
    if batch_size < 1 or num_images < batch_size:
        raise ValueError(f"need num_images >= batch_size >= 1, got num_images={num_images}, batch_size={batch_size}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device must be 'cpu' or an available 'cuda' device, got {device}")
    num_images -= num_images % batch_size

    threads = torch.get_num_threads()
    rows = []
    for size in image_sizes:
        images, source = load_images(num_images, size)
        pil_images = [to_pil_image(image) for image in images]
        ours = augmentations.build("simclr", image_size=size, mean=CIFAR10_MEAN, std=CIFAR10_STD)
        lightly = SimCLRTransform(
            input_size=size,
            cj_strength=0.5,
            gaussian_blur=0.0 if size <= 32 else 0.5,
            normalize={"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)},
        )
        per_image = _rate_per_image(lightly, pil_images)
        loader = _rate_loader(lightly, pil_images, batch_size)
        cpu = torch.device("cpu")
        rates = {(OURS, "cpu, 1 thread"): _rate_batched(ours, images, batch_size, cpu, threads=1)}
        if threads > 1:
            rates[(OURS, f"cpu, {threads} threads")] = _rate_batched(ours, images, batch_size, cpu, threads)
        rates[("lightly SimCLRTransform, per image", "cpu, 1 process")] = per_image
        rates[(f"lightly SimCLRTransform, DataLoader {LOADER_WORKERS} workers", "cpu, 1 thread each")] = loader
        if device.type == "cuda":
            rates[(OURS, str(device))] = _rate_batched(ours, images, batch_size, device)
            rates[("ours, torch.compile", str(device))] = _rate_batched(torch.compile(ours), images, batch_size, device)
        rows += [
            {
                "image_size": size,
                "pipeline": name,
                "device": where,
                "images_per_s": rate,
                "vs_lightly": rate / per_image,
                "vs_lightly_loader": rate / loader,
                "images": source,
            }
            for (name, where), rate in rates.items()
        ]
    return rows


def choice_cost(
    recipes: Sequence[str] = ("simclr", "supcon"), image_size: int = 32, num_images: int = 1024, batch_size: int = 256
) -> list[dict]:
    """Throughput of each recipe with colour-jitter orders / AutoAugment sub-policies chosen per
    image (the default, as torchvision) and once per batch (kornia's own behaviour), on the CPU.

    Returns one dict per recipe: ``recipe``, ``per_image`` and ``per_batch`` (images/s, two
    views), and ``ratio`` (``per_image / per_batch``).
    """
    images, _ = load_images(num_images - num_images % batch_size, image_size)
    rows = []
    for recipe in recipes:
        rates = {}
        for per_image in (True, False):
            pipeline = augmentations.build(
                recipe, image_size=image_size, mean=CIFAR10_MEAN, std=CIFAR10_STD, per_image_choices=per_image
            )
            rates[per_image] = _rate_batched(pipeline, images, batch_size, torch.device("cpu"))
        rows.append(
            {"recipe": recipe, "per_image": rates[True], "per_batch": rates[False], "ratio": rates[True] / rates[False]}
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`run`'s rows."""
    lines = [
        "| size | pipeline (2 views) | device | images/s | x lightly per image | x lightly DataLoader |",
        "|---:|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {row['image_size']} px | {row['pipeline']} | {row['device']} | {row['images_per_s']:,.0f} "
        f"| {row['vs_lightly']:.2f} | {row['vs_lightly_loader']:.2f} |"
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl bench augment``: run the benchmark and print the table and the ratios."""
    parser = argparse.ArgumentParser(prog="tcl-ssl bench augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the rows as JSON: {'rows': [...], 'choice_cost': [...]} (see run() and choice_cost())",
    )
    args = parser.parse_args(argv)

    rows = run(args.image_sizes, args.num_images, args.batch_size, args.device)
    print(
        f"images: {rows[0]['images']}; CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        f"at the end; torch {torch.__version__}; best of {REPEATS} passes"
    )
    print(format_table(rows))
    print()
    print(f"Cost of per-image choices (colour-jitter order, AutoAugment sub-policy), {args.image_sizes[0]} px, CPU:")
    print("| recipe | per image, images/s | per batch, images/s | per image / per batch |")
    print("|---|---:|---:|---:|")
    costs = choice_cost(image_size=args.image_sizes[0], num_images=args.num_images, batch_size=args.batch_size)
    for row in costs:
        print(f"| {row['recipe']} | {row['per_image']:,.0f} | {row['per_batch']:,.0f} | {row['ratio']:.2f} |")
    for row in rows:
        if row["pipeline"] == OURS and row["device"].startswith("cpu"):
            print(
                f"{row['image_size']} px, ours ({row['device']}) / lightly per image = {row['vs_lightly']:.2f}x, "
                f"ours / lightly DataLoader ({LOADER_WORKERS} workers) = {row['vs_lightly_loader']:.2f}x"
            )
    if args.json:
        write_json(args.json, {"rows": rows, "choice_cost": costs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
