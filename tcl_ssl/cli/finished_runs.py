"""The commands that work on finished runs: ``tcl-ssl eval``, ``tcl-ssl export`` and
``tcl-ssl summarize``. Torch is imported only when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tcl_ssl.cli.options import add_option_flag
from tcl_ssl.cli.report import format_metrics
from tcl_ssl.config import ConfigError, OptionSpec
from tcl_ssl.config.spec import parse_text

__all__ = ["add_eval", "add_export", "add_summarize"]

#: the evaluation protocols (tcl_ssl.evaluation.suite checks the names)
_PROTOCOLS_HELP = "comma-separated, of: knn, linear, linear-aug, retrieval"


def add_eval(sub: Any) -> None:
    """The ``eval`` command's parser."""
    p = sub.add_parser(
        "eval",
        help="kNN, linear probes and retrieval of a run's backbone (eval.json)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Rebuilds the backbone of any method's run from its config.json and checkpoint, loads the "
        "run's dataset (or, with --dataset, another one, resized to the run's image size: transfer), runs the "
        "chosen protocols on the validation and test splits, prints a table and adds the result to "
        "<run>/eval.json (one entry per weights and dataset) and the pictures to <run>/plots/.",
    )
    p.add_argument("run", help="run directory or checkpoint (.ckpt) of any method")
    # the options eval shares with pretrain are typed and checked by their declarations
    add_option_flag(p, "protocols", "knn,linear", _PROTOCOLS_HELP)  # argparse converts a text default
    add_option_flag(p, "dataset", None, "evaluate on another dataset (default: the run's)")
    add_option_flag(p, "data_dir", None, "where torchvision datasets are stored")
    add_option_flag(p, "knn_k", None, "(default: the run's, 200 unless changed)")
    add_option_flag(p, "knn_temperature", None, "(default: the run's, 0.1 unless changed)")
    add_option_flag(p, "linear_aug_epochs", 90, "epochs of the linear-aug protocol")
    p.add_argument("--linear-aug-batch-size", type=_batch_size, default=256, metavar="LINEAR_AUG_BATCH_SIZE")
    add_option_flag(p, "accelerator", "auto")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--save-features",
        default=None,
        metavar="FILE",
        help="also save the backbone's features and labels of each split (torch.save)",
    )
    p.set_defaults(func=run_eval)


#: ``--linear-aug-batch-size`` is no option of a run (no declaration in the schema): declared here
_BATCH_SIZE = OptionSpec(help="batch size of the linear-aug probe", minimum=1)


def _batch_size(text: str) -> int:
    """``--linear-aug-batch-size``: an integer >= 1, converted and checked as the declared
    options' flags are (:func:`tcl_ssl.config.spec.parse_text`)."""
    try:
        return int(parse_text("linear_aug_batch_size", text, int, _BATCH_SIZE))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_eval(args: argparse.Namespace) -> int:
    """``tcl-ssl eval``: evaluate, print the table."""
    from tcl_ssl.evaluation.run import eval_settings, evaluate_run  # torch: only when the command runs

    settings = eval_settings(
        args.run,
        args.knn_k,
        args.knn_temperature,
        linear_aug_epochs=args.linear_aug_epochs,
        linear_aug_batch_size=args.linear_aug_batch_size,
    )
    protocols = args.protocols
    entry = evaluate_run(
        args.run,
        protocols,
        args.dataset,
        data_dir=args.data_dir,
        settings=settings,
        accelerator=args.accelerator,
        plots=not args.no_plots,
        save_features=args.save_features,
    )
    print(f"{entry['method']} backbone on {entry['dataset']} (splits {entry['splits']}), {entry['seconds']:.0f} s")
    print(format_metrics({"val": entry["val"], "test": entry["test"]}))
    return 0


def add_export(sub: Any) -> None:
    """The ``export`` command's parser."""
    p = sub.add_parser(
        "export",
        help="write a run's backbone as a torchvision ResNet state_dict",
        description="write a run's backbone as a plain torchvision ResNet state_dict",
    )
    p.add_argument("run", help="run directory or checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="output file, e.g. backbone.pt")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """``tcl-ssl export``."""
    from tcl_ssl.export import export_backbone  # torch: only when the command runs

    out = export_backbone(args.run, args.out)
    print(f"wrote {out}; load it with tcl_ssl.load_backbone({str(out)!r})")
    return 0


def add_summarize(sub: Any) -> None:
    """The ``summarize`` command's parser."""
    p = sub.add_parser(
        "summarize",
        help="mean and spread over seeds of finished runs (a Markdown table)",
        description="Groups run directories by their configuration and prints one Markdown row per group: "
        "kNN and linear-probe top-1 on validation and test, the random-init backbone's, and the training time.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories (with config.json and summary.json)")
    p.set_defaults(func=run_summarize)


def run_summarize(args: argparse.Namespace) -> int:
    """``tcl-ssl summarize``."""
    from tcl_ssl.experiments.summarize import format_table, summarize  # torch: only when the command runs

    print(format_table(summarize(args.runs)))
    return 0
