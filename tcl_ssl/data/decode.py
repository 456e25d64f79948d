"""Decoding one image file to a fixed-size uint8 tensor, shared by the in-memory and streamed sources.

Both paths decode with :func:`decode_file`, so an image folder gives the same pixels whether it
is held in memory (:mod:`tcl_ssl.data.sources`) or read by DataLoader workers
(:mod:`tcl_ssl.data.streaming`).

Every mode and bit depth becomes what PIL's ``Image.convert("RGB")`` (or ``convert("L")``)
gives for the file's first frame: 16- and 32-bit and float pixels are clipped to 0..255 (as PIL
does; a warning says so once per process), palettes are expanded, alpha is dropped, CMYK and
YCbCr are converted. The common 8-bit JPEG and PNG files take a fast path through torchvision's
decoders, chosen from the file's first bytes (:func:`fast_decodable`); their pixels are the
same as PIL's (see ``tests/test_decode.py``).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tcl_ssl.safe_io import error_line

__all__ = ["IMAGE_EXTENSIONS", "decode_bytes", "decode_file", "decode_pixels", "decode_with_pil", "fast_decodable"]

log = logging.getLogger(__name__)

#: file name extensions of the images in an image folder (compared in lower case): torchvision
#: ``ImageFolder``'s ``IMG_EXTENSIONS`` and ``.gif``; every one decodes through PIL
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: PNG colour types torchvision decodes like PIL at 8 bits: grey, RGB, grey+alpha, RGBA (not palette)
_PNG_FAST_COLOURS = (0, 2, 4, 6)
#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT, JPG, DAC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: PIL modes whose pixels exceed 8 bits; PIL clips them to 0..255 when converting
_HIGH_DEPTH_MODES = ("I", "F")
_warned_clipping = False


def fast_decodable(data: bytes) -> str | None:
    """Whether torchvision decodes this file exactly as PIL does: ``"rgb"`` for an 8-bit JPEG
    (1 or 3 components) or a non-animated 8-bit PNG of colour type RGB or RGBA, ``"gray"`` for one
    that is grey (with or without alpha), else ``None`` (PIL decodes it). Reads a few header bytes."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 33 and data[12:16] == b"IHDR":
        depth, colour = data[24], data[25]
        if depth != 8 or colour not in _PNG_FAST_COLOURS:
            return None
        first_image = data.find(b"IDAT", 33)
        if first_image < 0 or data.find(b"acTL", 33, first_image) >= 0:  # APNG: PIL gives frame 0
            return None
        return "gray" if colour in (0, 4) else "rgb"
    if data.startswith(_JPEG_MAGIC):
        at = 2
        while at + 10 <= len(data) and data[at] == 0xFF:
            marker = data[at + 1]
            if marker in _JPEG_SOF:
                precision, components = data[at + 4], data[at + 9]
                if marker in (0xC3, 0xC7, 0xCB, 0xCF) or precision != 8 or components not in (1, 3):
                    return None
                return "gray" if components == 1 else "rgb"
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            (length,) = struct.unpack(">H", data[at + 2 : at + 4])
            at += 2 + length
    return None


def _rgb_to_l(image: Tensor) -> Tensor:
    """uint8 ``(3, H, W)`` RGB -> uint8 ``(1, H, W)`` grey with PIL's integer formula
    (ITU-R 601-2 luma, ``(R*19595 + G*38470 + B*7471 + 0x8000) >> 16``)."""
    r, g, b = image.to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


def decode_with_pil(data: bytes, channels: int = 3, name: str = "<bytes>") -> Tensor:
    """An image file's bytes as uint8 ``(channels, H, W)`` through PIL alone (the slow path of
    :func:`decode_pixels`, which every file it cannot take the fast path for takes): the first
    frame, converted as ``Image.convert("RGB")`` (``channels=3``) or ``convert("L")``
    (``channels=1``); ``name`` is the file's name for the clipping warning.

    Raises:
        Exception: whatever PIL raises for a file it cannot read.
    """
    from PIL import Image  # deferred: only the slow path needs it

    global _warned_clipping
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # animated GIF, APNG, WebP, multi-page TIFF: the first frame
        if image.mode.startswith(_HIGH_DEPTH_MODES) and not _warned_clipping:
            low, high = image.getextrema()
            if float(low) < 0 or float(high) > 255:  # type: ignore[arg-type]
                _warned_clipping = True
                log.warning(
                    "image file %s has %s pixels from %s to %s: clipped to 0..255 as PIL's convert does "
                    "(rescale such images to 8 bits first to keep their range); said once",
                    name,
                    image.mode,
                    low,
                    high,
                )
        with warnings.catch_warnings():  # PIL's advice on palettes with transparency: alpha is dropped anyway
            warnings.simplefilter("ignore", UserWarning)
            converted = image.convert("RGB" if channels == 3 else "L")
    pixels = torch.from_numpy(np.array(converted, dtype=np.uint8))
    return pixels.permute(2, 0, 1) if channels == 3 else pixels.unsqueeze(0)


def decode_pixels(data: bytes, channels: int = 3, name: str = "<bytes>") -> Tensor:
    """An image file's bytes as uint8 ``(channels, H, W)``, as PIL's ``convert("RGB")``
    (``channels=3``) or ``convert("L")`` (``channels=1``) gives its first frame.

    Raises:
        Exception: whatever the decoder raises for a file it cannot read (the caller names the file).
    """
    from torchvision.io import ImageReadMode, decode_image  # deferred: torchvision is slow to import

    kind = fast_decodable(data)
    if kind is not None:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            if channels == 3 or kind == "gray":
                return decode_image(encoded, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
            return _rgb_to_l(decode_image(encoded, mode=ImageReadMode.RGB))
        except RuntimeError:
            pass  # PIL says what is wrong with it, or reads what libjpeg/libpng refuse
    return decode_with_pil(data, channels, name)


def decode_bytes(data: bytes, size: int, channels: int = 3, name: str = "<bytes>") -> Tensor:
    """An image file's bytes as uint8 ``(channels, size, size)``: :func:`decode_pixels`, then the
    shorter side resized to ``size`` (bilinear, antialiased) and the centre ``size x size`` cropped.

    Raises:
        ValueError: naming ``name``, when the bytes cannot be decoded.
    """
    from torchvision.transforms.v2 import functional as TF  # deferred: torchvision is slow to import

    try:
        image = decode_pixels(data, channels, name)
    except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        raise ValueError(
            f"cannot decode image file {name!r} ({error_line(error)}); remove it, or pass --skip-bad-images to leave such files out"
        ) from error
    if image.shape[-2:] != (size, size):
        image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
    return image


def decode_file(path: str | bytes | Path, size: int, channels: int = 3) -> Tensor:
    """One image file as uint8 ``(channels, size, size)`` (:func:`decode_bytes` of its contents).

    The first frame is converted as :func:`decode_pixels` says (like PIL's ``convert``); the
    shorter side is resized to ``size`` (bilinear, antialiased), then the centre ``size x size``
    is cropped.

    Args:
        path: the image file (any of :data:`IMAGE_EXTENSIONS`; a name that is not UTF-8 may be
            given as bytes, or as a str with surrogate escapes, as ``os.fsdecode`` gives).
        size: side in pixels of the result.
        channels: 3 (RGB) or 1 (grayscale).

    Returns:
        The image, uint8 ``(channels, size, size)``.

    Raises:
        ValueError: naming the file, when it cannot be read or decoded.
    """
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ValueError(
            f"cannot read image file {name!r} ({error.strerror or error}); "
            "fix its permissions or remove it, or pass --skip-bad-images to leave such files out"
        ) from error
    return decode_bytes(data, size, channels, name)
