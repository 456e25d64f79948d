"""``tcl-ssl gradients`` and ``tcl-ssl data imagenet100``: each ``main(argv)`` parses the rest of
the command line after its words (forwarded by :func:`tcl_ssl.cli.main`) and calls the library."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tcl_ssl.data.imagenet100 import MODE_WORDS, MODES, build_imagenet100
from tcl_ssl.gradients import SweepSetting, plot_gradients

__all__ = ["gradients", "imagenet100"]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def gradients(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl gradients``: plot TCL's pull on positives and push on negatives; print the path."""
    parser = argparse.ArgumentParser(
        prog="tcl-ssl gradients",
        description="Plot TCL's pull on positives and push on negatives against their similarity.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    default = SweepSetting()
    parser.add_argument("--out", default="docs/gradients.png", help="PNG to write")
    parser.add_argument("--k1", type=_floats, default="0,100,1000,5000", help="k1 values (k2 = 1)")
    parser.add_argument("--k2", type=_floats, default="1,2,4", help="k2 values")
    parser.add_argument("--k1-for-k2", type=float, default=5000.0, help="k1 used with the k2 values")
    parser.add_argument("--temperature", type=float, default=default.temperature)
    parser.add_argument("--num-positives", type=int, default=default.num_positives)
    parser.add_argument("--num-negatives", type=int, default=default.num_negatives)
    parser.add_argument("--positive-similarity", type=float, default=default.positive_similarity)
    parser.add_argument("--negative-similarity", type=float, default=default.negative_similarity)
    args = parser.parse_args(argv)
    setting = SweepSetting(
        args.num_positives, args.num_negatives, args.positive_similarity, args.negative_similarity, args.temperature
    )
    path = plot_gradients(args.out, args.k1, args.k2, args.k1_for_k2, setting)
    print(f"wrote {path}  ({setting.describe()})")
    return 0


def imagenet100(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl data imagenet100 --source DIR --out DIR [--mode symlink|hardlink|copy]``."""
    parser = argparse.ArgumentParser(
        prog="tcl-ssl data imagenet100",
        description="build the 100-class ImageNet subset of CMC / solo-learn as a folder of links to an ImageNet copy",
    )
    parser.add_argument("--source", required=True, type=Path, help="ImageNet root with train/<wnid>/ and val/<wnid>/")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (missing, empty, or an earlier build to finish)"
    )
    parser.add_argument(
        "--mode", choices=MODES, default="symlink", help="symlink (default), hard link or copy each image"
    )
    args = parser.parse_args(argv)
    counts = build_imagenet100(args.source, args.out, mode=args.mode)
    print(
        f"ImageNet-100: {counts['train']:,} train and {counts['val']:,} val images in {args.out} "
        f"({MODE_WORDS[args.mode]})"
    )
    return 0
