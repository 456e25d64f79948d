"""Image decoding speed: torchvision's decoder, PIL, and the project's decode (``tcl-ssl bench decode``).

The same ``N`` image files of one folder (:func:`~tcl_ssl.bench.data.select_images`: the classes
in turn) are read into memory once; each row then decodes every file's bytes to uint8
``(3, H, W)`` RGB at its own size, in this process, one image at a time:

- ``torchvision``: ``torchvision.io.decode_image(..., mode=RGB)`` (libjpeg-turbo / libpng);
- ``pil``: ``PIL.Image.open(...).convert("RGB")`` and a tensor view of its pixels;
- ``ours``: :func:`~tcl_ssl.data.decode.decode_pixels`, which reads the header bytes, takes
  torchvision's decoder for 8-bit JPEG/PNG and PIL for the rest;
- ``ours (PIL path)``: the same function's PIL branch for every file (what the header check saves).

Each row runs ``repeats`` times, the rows interleaved within a repeat (so that load from other
processes falls on all rows alike); the table gives each row's best repeat in images/s (the
repeat least slowed by other processes, as ``timeit`` advises) and its ratio to the torchvision
row. It also counts the images whose pixels equal PIL's exactly.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from tcl_ssl.bench.data import DEFAULT_DATASET, select_images
from tcl_ssl.data import decode

__all__ = ["ROWS", "format_table", "main", "run"]


def _torchvision(data: bytes) -> Tensor:
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _pil(data: bytes) -> Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def _ours(data: bytes) -> Tensor:
    return decode.decode_pixels(data, 3)


def _ours_pil_path(data: bytes) -> Tensor:
    return decode.decode_with_pil(data, 3, "<bench>")


#: the rows: label -> decode of one file's bytes to uint8 (3, H, W)
ROWS: dict[str, Callable[[bytes], Tensor]] = {
    "torchvision": _torchvision,
    "pil": _pil,
    "ours": _ours,
    "ours (PIL path)": _ours_pil_path,
}


def run(dataset: str | Path, num_images: int, repeats: int) -> dict:
    """Decode ``num_images`` files of ``dataset`` with every row, ``repeats`` times.

    Returns:
        ``{"dataset", "images", "repeats", "rows": {label: {"rates": [images/s per repeat],
        "best": images/s}}, "equal_to_pil": {label: images whose pixels equal PIL's}}``.
    """
    if num_images < 1 or repeats < 1:
        raise ValueError(f"num_images and repeats must be >= 1, got {num_images} and {repeats}")
    files, _, _ = select_images(dataset, num_images)
    blobs = [Path(f).read_bytes() for f in files]
    reference = [_pil(b) for b in blobs]
    equal = {label: sum(torch.equal(fn(b), r) for b, r in zip(blobs, reference)) for label, fn in ROWS.items()}
    rates: dict[str, list[float]] = {label: [] for label in ROWS}
    for _ in range(repeats):
        for label, fn in ROWS.items():
            start = time.perf_counter()
            for blob in blobs:
                fn(blob)
            rates[label].append(len(blobs) / (time.perf_counter() - start))
    rows = {label: {"rates": r, "best": max(r)} for label, r in rates.items()}
    return {"dataset": str(dataset), "images": len(blobs), "repeats": repeats, "rows": rows, "equal_to_pil": equal}


def format_table(result: dict) -> str:
    """The result as a Markdown table: images/s (best repeat), x torchvision, pixels equal to PIL's."""
    base = result["rows"]["torchvision"]["best"]
    lines = [
        f"{result['images']} images of {result['dataset']}, best of {result['repeats']} repeats, one process",
        "",
        "| decode | images/s | x torchvision | images equal to PIL's |",
        "|---|---:|---:|---:|",
    ]
    for label, row in result["rows"].items():
        lines.append(
            f"| {label} | {row['best']:,.0f} | {row['best'] / base:.2f} | "
            f"{result['equal_to_pil'][label]} / {result['images']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl bench decode``: run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="tcl-ssl bench decode", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default=DEFAULT_DATASET, metavar="PATH", help="an image folder root/<class>/<image>"
    )
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(format_table(run(args.dataset, args.num_images, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
