"""The ``tcl-ssl`` command line: ``pretrain``, ``compare``, ``sweep``, ``eval``, ``export``, ``summarize``,
``bench``, ``data`` and ``gradients``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path

from tcl_ssl.train import PretrainConfig

_DEFAULTS = PretrainConfig()


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone (TCL by default) and evaluate it with kNN",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--method", default=_DEFAULTS.method, help="tcl, or a baseline (see --list-methods)")
    p.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    p.add_argument(
        "--config",
        default=None,
        metavar="RECIPE",
        help="start from a recipe file: a packaged name (see --list-recipes) or a YAML file's path; "
        "options given here override it",
    )
    p.add_argument("--list-recipes", action="store_true", help="print the packaged recipe files and exit")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--out", default=None, help="run directory (default runs/<timestamp>-<method>)")
    _add_run_options(p)
    p.add_argument(
        "--resume",
        default=None,
        help="run directory or checkpoint to resume from (RUN = RUN/checkpoints/last.ckpt): the run's "
        "config.json is used, changed only by the options given here (e.g. --epochs), and the run continues "
        "in RUN. Rerunning with the --out of an unfinished or finished run resumes it the same way",
    )
    p.set_defaults(func=_run_pretrain, forwarded=False, parser=p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options that configure a run, shared by ``pretrain``, ``compare`` and ``sweep``."""
    p.add_argument(
        "--dataset",
        default=_DEFAULTS.dataset,
        help="mnist5k (built in), cifar10, cifar100, mnist, fashion-mnist, svhn, stl10, "
        "torchvision:<ClassName>, or the path of an image folder root/<class>/<image>",
    )
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--supervised", action="store_true", help="use labels (positives = same class)")
    p.add_argument("--backbone", default=_DEFAULTS.backbone, help="resnet18, resnet34 or resnet50")
    p.add_argument(
        "--stem",
        default=None,
        help="imagenet, small or small-pool (default: small for <= 64 px on a GPU, else imagenet)",
    )
    recipe = p.add_argument_group("training recipe (default: the method's published recipe, see --list-methods)")
    recipe.add_argument("--augmentation", default=None, help="augmentation recipe: " + ", ".join(_recipes()))
    recipe.add_argument("--min-scale", type=float, default=None, help="smallest crop area fraction")
    recipe.add_argument("--num-views", type=int, default=None)
    recipe.add_argument("--optimizer", default=None, choices=("sgd", "lars"))
    recipe.add_argument("--lr", type=float, default=None, help="peak learning rate at batch size 256 (scaled linearly)")
    recipe.add_argument("--weight-decay", type=float, default=None)
    recipe.add_argument(
        "--warmup-epochs", type=int, default=None, help="(default: the method's, at most a tenth of the run)"
    )
    options = p.add_argument_group("method hyper-parameters (default: the method's)")
    options.add_argument("--temperature", type=float, default=None, help="loss temperature")
    options.add_argument("--k1", type=float, default=None, help="TCL hard-positive weight")
    options.add_argument("--k2", type=float, default=None, help="TCL negative weight")
    options.add_argument(
        "-o",
        "--method-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any option of the method (see --list-methods), e.g. -o queue_size=8192 -o momentum_start=0.996",
    )
    p.add_argument("--precision", default=None, help="Lightning precision, e.g. 32-true, bf16-mixed")
    p.add_argument("--accelerator", default=_DEFAULTS.accelerator)
    p.add_argument("--devices", default=_DEFAULTS.devices, help="Lightning's: a count, a list, or auto")
    p.add_argument("--num-nodes", type=int, default=_DEFAULTS.num_nodes)
    p.add_argument("--strategy", default=_DEFAULTS.strategy, help="Lightning's: auto, ddp, ddp_spawn, fsdp, ...")
    p.add_argument("--sync-batchnorm", action="store_true", help="BatchNorm statistics over all processes")
    evaluation = p.add_argument_group("evaluation (validation split: choose; test split: report)")
    evaluation.add_argument("--knn-k", type=int, default=_DEFAULTS.knn_k)
    evaluation.add_argument("--knn-temperature", type=float, default=_DEFAULTS.knn_temperature)
    evaluation.add_argument(
        "--knn-every",
        type=int,
        default=_DEFAULTS.knn_every_n_epochs,
        help="epochs between the validation kNN and online-probe checks (0: off)",
    )
    evaluation.add_argument(
        "--protocols",
        default=",".join(_DEFAULTS.eval_protocols),
        help="evaluations after training, comma-separated: knn, linear, linear-aug, retrieval",
    )
    evaluation.add_argument(
        "--linear-aug-epochs", type=int, default=_DEFAULTS.linear_aug_epochs, help="epochs of the linear-aug protocol"
    )
    evaluation.add_argument(
        "--linear-aug-lr",
        type=float,
        default=_DEFAULTS.linear_aug_lr,
        help="lr of the linear-aug protocol at batch 256 (scaled linearly)",
    )
    evaluation.add_argument("--no-plots", action="store_true", help="do not draw the run's pictures")
    p.add_argument(
        "--logger",
        default=_DEFAULTS.logger,
        choices=("csv", "tensorboard"),
        help="csv, or tensorboard as well (needs the tensorboard package)",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", default=None, help="where torchvision datasets are stored/downloaded")
    data.add_argument(
        "--image-size", type=int, default=None, help="resize every image to this side (image folders: default 32)"
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="fraction of train held out for validation (default 0.1), where validation is split off train",
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="fraction held out for test from a single image folder (default 0.2)",
    )
    data.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="train on a stratified subset of this many images of the train split (val and test unchanged)",
    )
    data.add_argument(
        "--data-source",
        default=_DEFAULTS.data_source,
        choices=("auto", "memory", "stream"),
        help="image folders: decode once into memory, or stream from the files with loader workers; "
        "auto streams folders whose decoded images exceed an eighth of this machine's memory",
    )
    data.add_argument(
        "--decode-size",
        type=int,
        default=None,
        help="image folders: decode to this side (shorter side, centre crop); the views are --image-size",
    )
    data.add_argument(
        "--workers",
        type=int,
        default=None,
        help="streamed folders: decoding processes per training process (default: CPU cores, at most 8)",
    )
    data.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out image files that cannot be decoded, with a warning (default: stop and name the file)",
    )
    p.add_argument(
        "--checkpoint-every-n-steps",
        type=int,
        default=_DEFAULTS.checkpoint_every_n_steps,
        help="also write last.ckpt every N optimiser steps (0: at the end of each epoch only)",
    )
    p.add_argument("--limit-train-batches", type=float, default=1.0, help=argparse.SUPPRESS)


def _recipes() -> list[str]:
    import augmentations

    return augmentations.available()


def _method_options(args: argparse.Namespace) -> dict:
    """``--temperature/--k1/--k2`` and every ``-o NAME=VALUE`` (values parsed as JSON numbers,
    booleans or null where they are, else kept as strings)."""
    options = {k: getattr(args, k) for k in ("temperature", "k1", "k2") if getattr(args, k) is not None}
    for item in args.method_option:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--method-option must be NAME=VALUE, got {item!r}")
        try:
            options[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[name.strip()] = text
    return options


def _config_from_args(args: argparse.Namespace) -> PretrainConfig:
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    limit = args.limit_train_batches
    return PretrainConfig(
        method=getattr(args, "method", _DEFAULTS.method),
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        supervised=args.supervised,
        seed=getattr(args, "seed", _DEFAULTS.seed),
        out=getattr(args, "out", None),
        backbone=args.backbone,
        stem=args.stem,
        augmentation=args.augmentation,
        augmentation_options={} if args.min_scale is None else {"min_scale": args.min_scale},
        num_views=args.num_views,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        method_options=_method_options(args),
        precision=args.precision,
        accelerator=args.accelerator,
        devices=devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        sync_batchnorm=args.sync_batchnorm,
        knn_k=args.knn_k,
        knn_temperature=args.knn_temperature,
        knn_every_n_epochs=args.knn_every,
        eval_protocols=_protocols(args.protocols),
        linear_aug_epochs=args.linear_aug_epochs,
        linear_aug_lr=args.linear_aug_lr,
        plots=not args.no_plots,
        logger=args.logger,
        data_dir=args.data_dir,
        image_size=args.image_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        train_images=args.train_images,
        skip_bad_images=args.skip_bad_images,
        data_source=args.data_source,
        decode_size=args.decode_size,
        workers=args.workers,
        resume=getattr(args, "resume", None),
        checkpoint_every_n_steps=args.checkpoint_every_n_steps,
        limit_train_batches=int(limit) if limit > 1 else limit,
    )


def _protocols(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


#: config fields that define the data and its splits, which a resumed run must keep
_DATA_FIELDS = {
    "dataset",
    "data_dir",
    "image_size",
    "decode_size",
    "val_fraction",
    "test_fraction",
    "skip_bad_images",
    "train_images",
}

#: config fields set by CLI options whose destination has another name
_FIELD_OF_DEST = {
    "knn_every": "knn_every_n_epochs",
    "protocols": "eval_protocols",
    "no_plots": "plots",
    "min_scale": "augmentation_options",
    "temperature": "method_options",
    "k1": "method_options",
    "k2": "method_options",
    "method_option": "method_options",
}


def _given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options that appear on the command line (not defaults), found by
    parsing ``argv`` (after the sub-command) again with every default suppressed."""
    actions = [a for a in parser._actions if a.dest != "help"]
    saved = [a.default for a in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv[argv.index(parser.prog.split()[-1]) + 1 :])
    finally:
        for action, default in zip(actions, saved):
            action.default = default
    return {a.dest for a in actions} & set(vars(given))


def _with_given_options(base: PretrainConfig, args: argparse.Namespace, argv: list[str], *, keep_data: bool) -> dict:
    """The fields of ``base`` that the options given on this command line change (``-o`` and
    ``--min-scale`` merged into the base's dictionaries); with ``keep_data``, a change to the
    data is refused."""
    asked = _config_from_args(args)
    changes: dict = {}
    for dest in _given_dests(args.parser, argv) - {"resume", "config"}:
        field = _FIELD_OF_DEST.get(dest, dest)
        if keep_data and field in _DATA_FIELDS and getattr(asked, field) != getattr(base, field):
            raise ValueError(
                f"--resume keeps the run's data: {field} was {getattr(base, field)!r}, got {getattr(asked, field)!r} "
                "(a new split would put validation or test images into training); start a new run instead"
            )
        if field in ("method_options", "augmentation_options"):
            changes[field] = getattr(base, field) | getattr(asked, field)
        elif hasattr(base, field):
            changes[field] = getattr(asked, field)
    return changes


def _resumed_config(args: argparse.Namespace, argv: list[str]) -> PretrainConfig:
    """The checkpoint's run configuration, with only the options given on this command line changed."""
    from tcl_ssl.export import resolve_checkpoint

    saved = PretrainConfig.saved(resolve_checkpoint(args.resume))
    return dataclasses.replace(saved, resume=args.resume, **_with_given_options(saved, args, argv, keep_data=True))


def _recipe_config(args: argparse.Namespace, argv: list[str]) -> PretrainConfig:
    """The recipe file's configuration, with the options given on this command line changed."""
    from tcl_ssl.recipes import load_recipe, recipe_path

    fields = load_recipe(args.config)
    try:
        base = PretrainConfig(**fields, recipe=str(recipe_path(args.config)))
    except TypeError as error:
        raise ValueError(f"recipe {args.config!r}: {error}") from None
    return dataclasses.replace(base, **_with_given_options(base, args, argv, keep_data=False))


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from tcl_ssl.compare import SELF_SUPERVISED_METHODS, SUPERVISED_METHODS

    p = sub.add_parser(
        "compare",
        help="run several methods x seeds under one budget: results table (md/csv/json) and plots",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Every method runs with the same budget (data, backbone, epochs, batch size, evaluation) "
        "and its own recipe: the method's published defaults, or the recipe file PREFIX-METHOD with --recipes. "
        "Options given here apply to every method (hyper-parameters such as --k1 to the methods that take them). "
        "Finished runs in --out are reused and interrupted ones resumed, so a rerun continues a comparison. "
        "Runs draw no pictures of their own; the comparison draws its curves and bars (--no-plots: none).",
    )
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods (default: {','.join(SELF_SUPERVISED_METHODS)}; "
        f"with --supervised: {','.join(SUPERVISED_METHODS)})",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument(
        "--recipes",
        default=None,
        metavar="PREFIX",
        help="method M starts from the recipe PREFIX-M: a packaged name (e.g. cpu-small-ssl, see "
        "pretrain --list-recipes) or a path prefix of YAML files (PREFIX-M.yaml)",
    )
    p.add_argument("--out", default=None, help="comparison directory (default comparisons/<setting>)")
    _add_run_options(p)
    p.set_defaults(func=_run_compare, forwarded=False, parser=p)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from tcl_ssl.sweep import SELECTABLE

    p = sub.add_parser(
        "sweep",
        help="a grid over one method's hyper-parameters, chosen on validation: table and heat-maps",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs every cell of the grid x every seed, selects the cell with the best mean validation "
        "figure and writes results.md/csv/json and heat-maps (--no-plots: none). Axes: k1, k2, temperature (and any "
        "method option), k1_rel (k1 = k1_rel * e^(1/temperature)), lr, weight_decay, warmup_epochs, optimizer, "
        "batch_size, num_views, epochs, augmentation, train_images, weak_view, min_scale. Finished runs are reused.",
    )
    p.add_argument("--method", default=_DEFAULTS.method, help="the method whose hyper-parameters are swept")
    p.add_argument("--config", default=None, metavar="RECIPE", help="start from a recipe file (name or path)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="one axis of the grid (repeat for more axes), e.g. --grid k1=0,10,30 --grid temperature=0.1,0.2",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds (every cell runs each)")
    p.add_argument(
        "--select", default="val_knn_top1", choices=SELECTABLE, help="the validation figure that selects a cell"
    )
    p.add_argument("--out", default=None, help="sweep directory (default sweeps/<method>)")
    _add_run_options(p)
    p.set_defaults(func=_run_sweep, forwarded=False, parser=p)


def _print_progress(event) -> None:
    """One line per run of a comparison or sweep: which of how many, and the time left."""
    head = f"[{event.index}/{event.total}] {event.run.group} seed {event.run.seed}"
    figures = ""
    if event.summary is not None:
        test = event.summary.get("test", {})
        figures = ", ".join(
            f"{name} test {test[key]:.2f}"
            for name, key in (("kNN", "knn_top1"), ("linear", "linear_top1"))
            if key in test
        )
    if event.state == "reused":
        line = f"{head}: reused ({figures})"
    elif event.state == "running":
        left = "" if event.seconds_left is None else f", about {max(1, round(event.seconds_left / 60))} min left"
        line = f"{head}: running ({event.elapsed / 60:.1f} min so far{left})"
    else:
        line = f"{head}: finished in {event.seconds / 60:.1f} min ({figures})"
    print(f"tcl-ssl: {line}", file=sys.stderr, flush=True)


def _method_configs(args: argparse.Namespace, methods: list[str]) -> dict[str, PretrainConfig]:
    """Each method's configuration: its recipe (``--recipes``) or defaults, changed by the options
    given on this command line; hyper-parameter options go to the methods that take them."""
    from tcl_ssl.methods import method_class
    from tcl_ssl.recipes import load_recipe, recipe_path

    configs: dict[str, PretrainConfig] = {}
    asked = _method_options(args)
    used: set[str] = set()
    for method in methods:
        accepted = set(method_class(method).options())
        if args.recipes:
            name = f"{args.recipes}-{method}"
            fields = load_recipe(name)
            if fields.get("method", method) != method:
                raise ValueError(f"recipe {name!r} is for method {fields['method']!r}, not {method!r}")
            base = PretrainConfig(**(fields | {"method": method}), recipe=str(recipe_path(name)))
        else:
            base = PretrainConfig(method=method)
        changes = _with_given_options(base, args, args.argv, keep_data=False)
        for name in ("method", "plots", "out"):  # the comparison's own: --out, and --no-plots for its plots
            changes.pop(name, None)
        if "method_options" in changes:
            changes["method_options"] = {
                k: v for k, v in changes["method_options"].items() if k in accepted or k not in asked
            }
            used |= accepted & set(asked)
        configs[method] = dataclasses.replace(base, **changes, plots=False)
    unused = sorted(set(asked) - used)
    if unused:
        raise ValueError(f"no method of {', '.join(methods)} takes the option(s) {', '.join(unused)}")
    return configs


def _run_compare(args: argparse.Namespace, rest: list[str]) -> int:
    from tcl_ssl.compare import SELF_SUPERVISED_METHODS, SUPERVISED_METHODS, compare, parse_list

    default_methods = SUPERVISED_METHODS if args.supervised else SELF_SUPERVISED_METHODS
    methods = parse_list(args.methods, what="--methods") if args.methods else list(default_methods)
    seeds = parse_list(args.seeds, int, what="--seeds")
    configs = _method_configs(args, methods)
    setting = "supervised" if next(iter(configs.values())).supervised else "self-supervised"
    out = Path(args.out or Path("comparisons") / setting)
    compare(
        configs,
        seeds,
        out,
        progress=_print_progress,
        command=" ".join(["tcl-ssl", *args.argv]),
        plots=not args.no_plots,
    )
    print((out / "results.md").read_text())
    print(f"results and plots: {out}")
    return 0


def _run_sweep(args: argparse.Namespace, rest: list[str]) -> int:
    from tcl_ssl.compare import parse_list
    from tcl_ssl.sweep import parse_axis, sweep

    axes: dict = {}
    for text in args.grid:
        name, values = parse_axis(text)
        if name in axes:
            raise ValueError(f"--grid names the axis {name!r} twice")
        axes[name] = values
    seeds = parse_list(args.seeds, int, what="--seeds")
    base = _recipe_config(args, args.argv) if args.config else _config_from_args(args)
    base = dataclasses.replace(base, plots=False)
    out = Path(args.out or Path("sweeps") / base.method)
    sweep(
        base,
        axes,
        seeds,
        out,
        metric=args.select,
        progress=_print_progress,
        command=" ".join(["tcl-ssl", *args.argv]),
        plots=not args.no_plots,
    )
    print((out / "results.md").read_text())
    print(f"results and plots: {out}")
    return 0


def _run_pretrain(args: argparse.Namespace, rest: list[str]) -> int:
    from tcl_ssl.train import pretrain

    if args.list_methods:
        from tcl_ssl.methods.registry import describe_methods

        print(describe_methods())
        return 0
    if args.list_recipes:
        from tcl_ssl.recipes import describe_recipes

        print(describe_recipes())
        return 0
    if args.resume is None and args.out is not None and (Path(args.out) / "checkpoints" / "last.ckpt").is_file():
        args.resume = args.out
        print(
            f"tcl-ssl: {args.out} holds a run: resuming it from its last checkpoint "
            "(give another --out to start afresh)",
            file=sys.stderr,
        )
    if args.resume:
        config = _resumed_config(args, args.argv)
    elif args.config:
        config = _recipe_config(args, args.argv)
    else:
        config = _config_from_args(args)
    summary = pretrain(config)
    print()
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    """A short table of a run's final figures: validation and test side by side."""
    mode = "supervised" if summary["supervised"] else "self-supervised"
    splits = summary.get("splits", {})
    lines = [
        f"{summary['method']} ({mode}) on {summary['dataset']}, {summary['epochs']} epochs, "
        f"{summary['train_seconds']:.0f} s of training; splits {splits}",
        format_metrics(
            {"val": summary["val"], "test": summary["test"]},
            {f"random init, {name}": summary["random_init"][name] for name in ("val", "test")},
        ),
    ]
    online = summary.get("online_probe") or {}
    if online.get("final_val_top1") is not None:
        best = (
            ""
            if online.get("best_val_top1") is None
            else (f"; best val {online['best_val_top1']:.2f} (epoch {online['best_epoch']})")
        )
        lines.append(
            f"online linear probe top-1: val {online['final_val_top1']:.2f}, test {online['final_test_top1']:.2f}{best}"
        )
    lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)


def format_metrics(columns: dict[str, dict[str, float]], extra: dict[str, dict[str, float]] | None = None) -> str:
    """A Markdown table: one row per metric, one column per entry of ``columns`` (and of ``extra``)."""
    columns = columns | (extra or {})
    names = [m for m in dict.fromkeys(k for c in columns.values() for k in c)]
    lines = ["| metric (%) | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for name in names:
        cells = [f"{c[name]:.2f}" if name in c else "" for c in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: sub-commands whose own ``main(argv)`` parses the rest of the command line
_FORWARDED = {
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
    ("bench", "train"): (
        "tcl_ssl.bench.train",
        "images/s of SimCLR training: ours vs lightly's reference pipeline vs the backbone alone",
    ),
    ("data", "imagenet100"): (
        "tcl_ssl.data.imagenet100",
        "build the 100-class ImageNet subset of CMC / solo-learn as links to an ImageNet copy",
    ),
    ("gradients",): ("tcl_ssl.gradients", "plot the pull on positives and push on negatives vs similarity"),
    ("summarize",): ("tcl_ssl.results", "mean and spread over seeds of finished runs (a Markdown table)"),
    ("eval",): ("tcl_ssl.evaluate", "kNN, linear probes and retrieval of a run's backbone (eval.json)"),
    ("export",): ("tcl_ssl.export", "write a run's backbone as a torchvision ResNet state_dict"),
}


def _add_forwarded(sub: argparse._SubParsersAction) -> None:
    groups = {
        "bench": sub.add_parser("bench", help="benchmarks that print ratios").add_subparsers(
            dest="bench", required=True
        ),
        "data": sub.add_parser("data", help="prepare datasets").add_subparsers(dest="data", required=True),
    }
    for words, (module, help_text) in _FORWARDED.items():
        target = groups[words[0]] if len(words) > 1 else sub
        p = target.add_parser(words[-1], help=help_text, add_help=False)
        p.set_defaults(func=_forward(module), forwarded=True)


def _forward(module_name: str):
    def run(args: argparse.Namespace, rest: list[str]) -> int:
        import importlib

        return importlib.import_module(module_name).main(rest) or 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcl-ssl", description="Tuned Contrastive Learning for PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and warnings")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(sub)
    _add_compare(sub)
    _add_sweep(sub)
    _add_forwarded(sub)
    return parser


def _message(error: Exception) -> str:
    """The error's message; for one raised in a DataLoader worker (which the loader re-raises with
    the worker's traceback in the message), the original message alone."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = parser.parse_known_args(argv)
    args.argv = argv
    if rest and not args.forwarded:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from torch.multiprocessing.spawn import ProcessRaisedException

    from tcl_ssl.checkpointing import NonFiniteLossError

    try:
        return args.func(args, rest)
    except (ValueError, MisconfigurationException) as error:  # a mistake in the input
        print(f"tcl-ssl: error: {_message(error)}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, OSError) as error:  # training diverged; a file could not be read or written
        print(f"tcl-ssl: error: {_message(error)}", file=sys.stderr)
        return 1
    except ProcessRaisedException as error:  # the same, in a worker of --strategy ddp_spawn
        print(f"tcl-ssl: error in a worker process: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
