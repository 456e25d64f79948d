"""A picture of every augmentation pipeline's views of a few CIFAR-10 images (``docs/augment_grid.png``).

    python -m augmentations.grid --output docs/augment_grid.png

One block per pipeline; in each, a row per image: the original, then ``num_views`` views
(un-normalised for display).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

import augmentations
from augmentations.samples import CIFAR10_MEAN, CIFAR10_STD, DEFAULT_IMAGE_ROOT, load_images

__all__ = ["render_grid", "main"]


def render_grid(
    images: torch.Tensor,
    *,
    pipelines: Sequence[str] | None = None,
    image_size: int = 32,
    num_views: int = 4,
    seed: int = 0,
    blocks_per_row: int = 3,
) -> Figure:
    """Draw each augmentation pipeline's views of ``images`` (uint8 RGB ``(N, 3, H, W)``).

    Args:
        images: the originals, shown fitted to ``image_size``.
        pipelines: pipeline names, default all of :func:`augmentations.available`.
        image_size: side in pixels of the views.
        num_views: views per image and pipeline.
        seed: seed of every pipeline, so the picture is reproducible.
        blocks_per_row: pipeline blocks side by side.

    Returns:
        The figure (not shown, not saved).
    """
    pipelines = list(pipelines or augmentations.available())
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    (originals,) = augmentations.build("eval", num_views=1, image_size=image_size, mean=CIFAR10_MEAN, std=CIFAR10_STD)(
        images
    )
    columns = ["original"] + [f"view {i + 1}" for i in range(num_views)]

    block_rows = math.ceil(len(pipelines) / blocks_per_row)
    cell = 0.55  # inches per image
    figure = Figure(
        figsize=(blocks_per_row * len(columns) * cell * 1.1, block_rows * (len(images) * cell + 0.6)),
        layout="constrained",
    )
    blocks = figure.subfigures(block_rows, blocks_per_row, squeeze=False).ravel()
    for block, name in zip(blocks, pipelines):
        views = augmentations.build(
            name, num_views=num_views, seed=seed, image_size=image_size, mean=CIFAR10_MEAN, std=CIFAR10_STD
        )(images)
        axes = block.subplots(len(images), len(columns), squeeze=False)
        block.suptitle(name, fontsize=11, fontweight="bold")
        for column, batch in enumerate([originals, *views]):
            pixels = (batch * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            for row, image in enumerate(pixels):
                axes[row, column].imshow(image, interpolation="nearest")
                axes[row, column].set_axis_off()
            axes[0, column].set_title(columns[column], fontsize=7)
    for block in blocks[len(pipelines) :]:
        block.set_visible(False)
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    """Render the grid of ``--num-images`` images spread evenly over the sorted JPEGs to ``--output``."""
    parser = argparse.ArgumentParser(prog="python -m augmentations.grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("docs/augment_grid.png"))
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGE_ROOT, help="folder of <class>/*.jpg")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--num-views", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images, source = load_images(args.num_images, args.image_size, args.images)
    if source == "random":
        parser.error(f"no JPEG images under {args.images}/<class>/")
    figure = render_grid(images, image_size=args.image_size, num_views=args.num_views, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=150)
    print(f"wrote {args.output} ({source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
