"""``tcl-ssl gradients`` and ``tcl-ssl data imagenet100``: each ``main(argv)`` parses the rest of
the command line after its words (forwarded by :func:`tcl_ssl.cli.main`) and calls the library."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tcl_ssl.data.imagenet100 import MODE_WORDS, MODES, build_imagenet100
from tcl_ssl.gradients import RelativesSetting, SweepSetting, plot_gradients

__all__ = ["gradients", "imagenet100"]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def gradients(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl gradients``: plot the pull on positives and push on negatives of TCL and its
    relatives (NT-Xent, DCL, DCLW, HCL, debiased); print the path."""
    parser = argparse.ArgumentParser(
        prog="tcl-ssl gradients",
        description="Plot the pull on positives and push on negatives against their similarity: TCL (left, "
        "middle) and its relatives NT-Xent, DCL, DCLW, HCL, debiased (right).",
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
    rel = RelativesSetting()
    parser.add_argument(
        "--relatives-temperature", type=float, default=rel.temperature, help="t of the relatives column"
    )
    parser.add_argument("--relatives-negatives", type=int, default=rel.num_negatives, help="its negatives (2B - 2)")
    parser.add_argument("--relatives-k1", type=float, default=rel.k1, help="TCL's k1 in the relatives column")
    parser.add_argument("--tau-plus", type=float, default=rel.tau_plus, help="tau+ of HCL and debiased")
    parser.add_argument("--beta", type=float, default=rel.beta, help="beta of HCL")
    parser.add_argument("--sigma", type=float, default=rel.sigma, help="sigma of DCLW")
    parser.add_argument("--no-relatives", action="store_true", help="leave the relatives column out")
    args = parser.parse_args(argv)
    setting = SweepSetting(
        args.num_positives, args.num_negatives, args.positive_similarity, args.negative_similarity, args.temperature
    )
    relatives = RelativesSetting(
        num_negatives=args.relatives_negatives,
        positive_similarity=args.positive_similarity,
        negative_similarity=args.negative_similarity,
        temperature=args.relatives_temperature,
        k1=args.relatives_k1,
        tau_plus=args.tau_plus,
        beta=args.beta,
        sigma=args.sigma,
    )
    path = plot_gradients(
        args.out, args.k1, args.k2, args.k1_for_k2, setting, relatives=None if args.no_relatives else relatives
    )
    print(
        f"wrote {path}  (TCL: {setting.describe()}"
        + ("" if args.no_relatives else f"; relatives: {relatives.describe()}")
        + ")"
    )
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
