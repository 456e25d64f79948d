"""Sample images for the augmentation picture and benchmarks: a few CIFAR-10 JPEGs, or random ones."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F
from torchvision.io import ImageReadMode, decode_image

__all__ = ["DEFAULT_IMAGE_ROOT", "CIFAR10_MEAN", "CIFAR10_STD", "load_images"]

DEFAULT_IMAGE_ROOT = Path("/work/shared/datasets/cifar10-jpeg/train")
"""Folder of ``<class>/<image>.jpg`` files read when present."""

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def load_images(num_images: int, image_size: int, root: Path = DEFAULT_IMAGE_ROOT) -> tuple[torch.Tensor, str]:
    """``num_images`` RGB images as uint8 ``(N, 3, image_size, image_size)``, and where they came from.

    Takes JPEGs evenly spread over the sorted ``root/<class>/*.jpg`` files (repeating files when
    there are fewer), resized (bilinear, antialiased) to ``image_size`` where they differ; random
    images (seed 0) when ``root`` has none.
    """
    files = sorted(root.glob("*/*.jpg")) if root.is_dir() else []
    if not files:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (num_images, 3, image_size, image_size), generator=generator, dtype=torch.uint8)
        return images, "random"
    picked = [files[i * len(files) // num_images] for i in range(num_images)]
    images = torch.stack([decode_image(str(path), mode=ImageReadMode.RGB) for path in picked])
    if images.shape[-2:] != (image_size, image_size):
        resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images, f"{len(picked)} JPEGs from {root}"
