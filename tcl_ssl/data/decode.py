"""Decoding one image file to a fixed-size uint8 tensor, shared by the in-memory and streamed sources.

Both paths decode with :func:`decode_file`, so an image folder gives the same pixels whether it
is held in memory (:mod:`tcl_ssl.data.sources`) or read by DataLoader workers
(:mod:`tcl_ssl.data.streaming`).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

__all__ = ["decode_file"]


def decode_file(path: str | Path, size: int, channels: int = 3) -> Tensor:
    """One image file as uint8 ``(channels, size, size)``.

    The shorter side is resized to ``size`` (bilinear, antialiased), then the centre
    ``size x size`` is cropped; grayscale, palette and RGBA files are converted to
    ``channels`` (as torchvision's ``ImageFolder`` converts to RGB).

    Args:
        path: the image file (any format torchvision's ``decode_image`` reads: JPEG, PNG,
            GIF, WebP, ...).
        size: side in pixels of the result.
        channels: 3 (RGB) or 1 (grayscale).

    Returns:
        The image, uint8 ``(channels, size, size)``.

    Raises:
        ValueError: naming the file, when it cannot be decoded.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file  # deferred: torchvision is slow to import
    from torchvision.transforms.v2 import functional as TF  # deferred: as above

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    try:
        image = decode_image(read_file(str(path)), mode=mode)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"cannot decode image file {str(path)!r} ({str(error).splitlines()[0]}); "
            "remove it, or pass --skip-bad-images to leave such files out"
        ) from error
    if image.shape[-2:] != (size, size):
        image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
    return image
