"""The ``tcl-ssl`` command: ``pretrain``, ``compare``, ``sweep``, ``tune``, ``eval``, ``export``,
``summarize``, ``bench``, ``data`` and ``gradients``.

Every command calls a library function; the run options' flags derive from the configuration's
declarations (:mod:`tcl_ssl.cli.options`). Building the parser imports no torch, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tcl_ssl.cli.finished_runs import add_eval, add_export, add_summarize
from tcl_ssl.cli.pretraining import add_compare, add_pretrain, add_sweep, add_tune
from tcl_ssl.processes import end_process_group, wait_for_children

__all__ = ["CHILD_TIMEOUT", "build_parser", "main"]

#: seconds the launching process waits, once done, for the DDP processes it started to end
CHILD_TIMEOUT = 120.0
#: the exit status when the output's reader went away (128 + SIGPIPE, as a shell reports a tool killed by it)
BROKEN_PIPE_STATUS = 141

#: sub-commands whose function (``module:function``, default ``main``) parses the rest of the command line
FORWARDED = {
    ("bench", "loss"): (
        "tcl_ssl.bench.loss",
        "time TCLLoss forward+backward against PML, lightly, the official formula",
    ),
    ("bench", "augment"): (
        "tcl_ssl.bench.augment",
        "images/s of the batched augmentation vs lightly's per-image transform",
    ),
    ("bench", "eval"): ("tcl_ssl.bench.eval", "kNN and linear-probe time and memory vs lightly and scikit-learn"),
    ("bench", "data"): (
        "tcl_ssl.bench.data",
        "images/s of uint8 batches from an image folder: in memory, streamed, litdata",
    ),
    ("bench", "decode"): (
        "tcl_ssl.bench.decode",
        "images/s of image decoding: torchvision, PIL, ours (fast path + PIL for the rest)",
    ),
    ("bench", "train"): (
        "tcl_ssl.bench.train",
        "images/s of SimCLR training: ours vs lightly's reference pipeline vs the backbone alone",
    ),
    ("data", "imagenet100"): (
        "tcl_ssl.cli.tools:imagenet100",
        "build the 100-class ImageNet subset of CMC / solo-learn as links to an ImageNet copy",
    ),
    ("gradients",): ("tcl_ssl.cli.tools:gradients", "plot the pull on positives and push on negatives vs similarity"),
}


def _forward(target: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module(module_name), function or "main")(args.rest) or 0
        return result

    return run


def _add_forwarded(sub: Any) -> None:
    groups = {
        "bench": sub.add_parser("bench", help="benchmarks that print ratios").add_subparsers(
            dest="bench", required=True
        ),
        "data": sub.add_parser("data", help="prepare datasets").add_subparsers(dest="data", required=True),
    }
    for words, (module, help_text) in FORWARDED.items():
        target = groups[words[0]] if len(words) > 1 else sub
        p = target.add_parser(words[-1], help=help_text, add_help=False)
        p.set_defaults(func=_forward(module), forwarded=True)


def build_parser() -> argparse.ArgumentParser:
    """The ``tcl-ssl`` parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="tcl-ssl", description="Tuned Contrastive Learning for PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and warnings")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_pretrain, add_compare, add_sweep, add_tune, add_eval, add_export, add_summarize):
        add(sub)
    _add_forwarded(sub)
    return parser


def _message(error: BaseException) -> str:
    """The error's message; for one raised in a DataLoader worker (which the loader re-raises with
    the worker's traceback in the message), the original message alone."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tcl-ssl`` command line; the exit status (0 done, 1 failed, 2 bad input).

    A process that launched others (``--strategy ddp``: ranks > 0 rerun this command line) waits
    for them before it exits and fails, naming the rank, if one of them failed; an error here
    caused by a failed rank (a collective whose peer is gone) is reported as that rank's."""
    try:
        status = _command(argv)
    except Exception as error:
        ends = wait_for_children(5)
        if not any(end.code is not None for end in ends):
            raise  # this process's own failure
        for end in ends:
            print(f"tcl-ssl: error: {end.describe()}", file=sys.stderr)
        print(f"tcl-ssl: error: process 0 stopped with it: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    finally:
        try:
            end_process_group()
        except Exception:  # a group whose peers are gone: nothing left to end cleanly
            pass
    return _end_children(status)


def _end_children(status: int) -> int:
    """``status``, or 1 if a process that this one launched failed or did not end, each named on
    stderr. Waits up to :data:`CHILD_TIMEOUT` seconds (5 after a failure here, when the others
    may wait for this one forever)."""
    ends = wait_for_children(CHILD_TIMEOUT if status == 0 else 5)
    for end in ends:
        print(f"tcl-ssl: error: {end.describe()}", file=sys.stderr)
    return 1 if ends and status == 0 else status


def _command(argv: Sequence[str] | None) -> int:
    """The command's exit status, its errors reported as a message (no traceback)."""
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    args, rest = parser.parse_known_args(arguments)
    args.argv, args.rest = arguments, rest
    if rest and not getattr(args, "forwarded", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
    # the errors a command reports as a message: imported after parsing, as they import torch
    from lightning_fabric.utilities.exceptions import MisconfigurationException  # noqa: I001 (see above)
    from torch.multiprocessing.spawn import ProcessRaisedException  # (torch: after parsing)

    from tcl_ssl.checkpointing import NonFiniteLossError  # (torch: after parsing)

    try:
        result: int = args.func(args)
        return result
    except (ValueError, MisconfigurationException) as error:  # a mistake in the input
        print(f"tcl-ssl: error: {_message(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the output went away (`tcl-ssl ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return BROKEN_PIPE_STATUS
    except (NonFiniteLossError, OSError) as error:  # training diverged; a file could not be read or written
        print(f"tcl-ssl: error: {_message(error)}", file=sys.stderr)
        return 1
    except ProcessRaisedException as error:  # the same, in a worker of --strategy ddp_spawn
        print(f"tcl-ssl: error in a worker process: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
