"""The commands that train: ``tcl-ssl pretrain``, ``tcl-ssl compare``, ``tcl-ssl sweep`` and ``tcl-ssl tune``.

Their run options come from :mod:`tcl_ssl.cli.options`; each command turns the options given
into configurations (over defaults, a recipe file or a resumed run's record) and calls the
library. Torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tcl_ssl.cli.options import add_config_options, apply_given, given_options, mapping_keys
from tcl_ssl.cli.report import format_summary, print_progress
from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.config.recipes import describe_recipes, load_recipe, recipe_exists
from tcl_ssl.processes import is_process_zero
from tcl_ssl.runs import read_record, resolve_checkpoint, run_dir_of
from tcl_ssl.runs.reuse import check_resume

__all__ = ["add_compare", "add_pretrain", "add_sweep", "add_tune", "method_configs", "resumed_config"]

_FORMATTER = argparse.HelpFormatter


def add_pretrain(sub: Any) -> None:
    """The ``pretrain`` command's parser."""
    p = sub.add_parser(
        "pretrain",
        usage="%(prog)s [--config RECIPE | --resume RUN] [OPTION ...]",
        help="pretrain a backbone (TCL by default) and evaluate it with kNN",
        formatter_class=_FORMATTER,
        description="Options given here override the recipe (--config) or the resumed run (--resume); "
        "unset ones take the method's defaults.",
    )
    p.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    p.add_argument(
        "--config",
        default=None,
        metavar="RECIPE",
        help="start from a recipe file: a packaged name (see --list-recipes) or a YAML file's path",
    )
    p.add_argument("--list-recipes", action="store_true", help="print the packaged recipe files and exit")
    add_config_options(p)
    p.set_defaults(func=run_pretrain)


def add_compare(sub: Any) -> None:
    """The ``compare`` command's parser."""
    p = sub.add_parser(
        "compare",
        usage="%(prog)s [--methods M1,M2] [--seeds 0,1,2] [--recipes PREFIX] [--out DIR] [OPTION ...]",
        help="run several methods x seeds under one budget: results table (md/csv/json) and plots",
        formatter_class=_FORMATTER,
        description="Every method runs with the same budget (data, backbone, epochs, batch size, evaluation) "
        "and its own recipe: the method's published defaults, or the recipe file PREFIX-METHOD with --recipes. "
        "Options given here apply to every method (hyper-parameters such as --k1 to the methods that take them). "
        "Finished runs in --out are reused and interrupted ones resumed, so a rerun continues a comparison. "
        "Runs draw no pictures of their own; the comparison draws its curves and bars (--no-plots: none).",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: every method of the setting, see pretrain --list-methods; "
        "with --recipes, those that have a recipe PREFIX-METHOD)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument(
        "--recipes",
        default=None,
        metavar="PREFIX",
        help="method M starts from the recipe PREFIX-M: a packaged name (e.g. cpu-small-ssl, see "
        "pretrain --list-recipes) or a path prefix of YAML files (PREFIX-M.yaml)",
    )
    p.add_argument("--out", default=None, help="comparison directory (default comparisons/<setting>)")
    add_config_options(p, exclude=("method", "seed", "out", "resume"))
    p.set_defaults(func=run_compare)


def add_sweep(sub: Any) -> None:
    """The ``sweep`` command's parser."""
    p = sub.add_parser(
        "sweep",
        usage="%(prog)s --grid NAME=V1,V2 [--grid ...] [--method M] [--config RECIPE] [--seeds 0] [--out DIR] "
        "[OPTION ...]",
        help="a grid over one method's hyper-parameters, chosen on validation: table and heat-maps",
        formatter_class=_FORMATTER,
        description="Runs every cell of the grid x every seed, selects the cell with the best mean validation "
        "figure and writes results.md/csv/json and heat-maps (--no-plots: none). Axes: the method's options "
        "(k1, k2, temperature, ...), k1_rel (k1 = k1_rel * e^(1/temperature)), the augmentation's options "
        "(weak_view, min_scale, ...) and "
        + ", ".join(k for k in PretrainConfig.sweep_keys() if k not in mapping_keys())
        + ". Finished runs are reused.",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="RECIPE",
        help="start from a recipe file (name or path)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="one axis of the grid (repeat for more axes), e.g. --grid k1=0,10,30 --grid temperature=0.1,0.2",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds, every cell runs each (default: 0)")
    p.add_argument(
        "--select",
        default="val_knn_top1",
        choices=("val_knn_top1", "val_linear_top1"),
        help="the validation figure that selects a cell (default: val_knn_top1)",
    )
    p.add_argument("--out", default=None, help="sweep directory (default sweeps/<method>)")
    add_config_options(p, exclude=("seed", "out", "resume"))
    p.set_defaults(func=run_sweep)


def add_tune(sub: Any) -> None:
    """The ``tune`` command's parser."""
    p = sub.add_parser(
        "tune",
        usage="%(prog)s [--method M] [--config RECIPE] [--seeds 100] [--recipe-prefix PREFIX] [--out DIR] [OPTION ...]",
        help="one method's tuning search on validation: the lr, then each of its key knobs in turn",
        formatter_class=_FORMATTER,
        description="A coordinate search chosen on a validation figure: the lr at --lr-factors times the "
        "method's (its recipe's or its default), then each knob of the method's search space (listed by "
        "pretrain --list-methods) over its values, the others at the values chosen so far. Writes "
        "results.md/csv/json; with --recipe-prefix, the chosen settings as the recipe PREFIX-METHOD.yaml that "
        "compare --recipes PREFIX reads. Finished runs are reused and interrupted ones resumed.",
    )
    p.add_argument("--config", default=None, metavar="RECIPE", help="start from a recipe file (name or path)")
    p.add_argument("--seeds", default="100", help="comma-separated seeds, every setting runs each (default: 100)")
    p.add_argument("--lr-factors", default="0.5,1,2", help="the first step's lr, times the method's (default: 0.5,1,2)")
    p.add_argument(
        "--select",
        default="val_knn_top1",
        choices=("val_knn_top1", "val_linear_top1"),
        help="the validation figure that chooses (default: val_knn_top1)",
    )
    p.add_argument(
        "--recipe-prefix",
        default=None,
        metavar="PREFIX",
        help="write the chosen settings to the recipe file PREFIX-METHOD.yaml",
    )
    p.add_argument("--out", default=None, help="search directory (default tune/<method>)")
    add_config_options(p, exclude=("seed", "out", "resume"))
    p.set_defaults(func=run_tune)


def resumed_config(resume: str, given: dict[str, Any]) -> PretrainConfig:
    """The configuration of the run that ``resume`` (a run directory or checkpoint) belongs to,
    changed only by the ``given`` options; it continues in the given ``out``, else in the
    directory the checkpoint is in (wherever that directory is now).

    Raises:
        ConfigError: if a given option would change what the run is (its data, backbone, stem,
            method or supervised: :data:`tcl_ssl.runs.reuse.RESUME_KEEPS`).
    """
    checkpoint = resolve_checkpoint(resume)
    held = read_record(checkpoint)
    config = apply_given(held.config, given)
    check_resume(held, config, held.run_dir)
    return config.replace(resume=resume, out=given.get("out") or str(run_dir_of(checkpoint))).checked()


def _base_config(recipe: str | None, given: dict[str, Any]) -> PretrainConfig:
    """The recipe's configuration (or the defaults) changed by the given options, checked."""
    if recipe is None:
        return apply_given(PretrainConfig(), given).checked()
    return load_recipe(recipe).config(**given)


def run_pretrain(args: argparse.Namespace) -> int:
    """``tcl-ssl pretrain``."""
    if args.list_methods:
        from tcl_ssl.methods.registry import describe_methods  # imports torch: only when asked

        print(describe_methods())
        return 0
    if args.list_recipes:
        print(describe_recipes())
        return 0
    given = given_options(args)
    resume, out = given.pop("resume", None), given.get("out")
    found = resume is None and out is not None and (Path(out) / "checkpoints" / "last.ckpt").is_file()
    if found:
        resume = out
    config = resumed_config(resume, given) if resume else _base_config(args.config, given)
    if found and is_process_zero():
        print(
            f"tcl-ssl: {out} holds a run: resuming it from its last checkpoint (give another --out to start afresh)",
            file=sys.stderr,
        )
    from tcl_ssl.train import pretrain  # torch is imported when a command runs, not for --help

    summary = pretrain(config)
    if summary is not None:  # processes other than 0 of a multi-process run print nothing
        print()
        print(format_summary(summary))
    return 0


def method_configs(args: argparse.Namespace, methods: list[str]) -> dict[str, PretrainConfig]:
    """Each method's configuration: its recipe (``--recipes``) or defaults, changed by the options
    given on the command line; method options go to the methods that take them.

    Raises:
        ConfigError: for a recipe of another method, or a method option no method takes.
    """
    # torch is imported when a command runs, not for --help
    from tcl_ssl.methods import method_class

    given = given_options(args)
    given.pop("plots", None)  # --no-plots: the comparison's own pictures
    asked = dict(given.pop("method_options", {}))
    used: set[str] = set()
    configs: dict[str, PretrainConfig] = {}
    for method in methods:
        accepted = set(method_class(method).options())
        options = {k: v for k, v in asked.items() if k in accepted}
        used |= set(options)
        mine = given | ({"method_options": options} if options else {})
        if args.recipes:
            name = f"{args.recipes}-{method}"
            recipe = load_recipe(name)
            if recipe.options.get("method", method) != method:
                raise ConfigError(f"recipe {name!r} is for method {recipe.options['method']!r}, not {method!r}")
            config = recipe.config(**mine, method=method)
        else:
            config = apply_given(PretrainConfig.build(method=method), mine).checked()
        configs[method] = config.replace(plots=False)
    unused = sorted(set(asked) - used)
    if unused:
        raise ConfigError(f"no method of {', '.join(methods)} takes the option(s) {', '.join(unused)}")
    return configs


def run_compare(args: argparse.Namespace) -> int:
    """``tcl-ssl compare``."""
    # torch is imported when a command runs, not for --help
    from tcl_ssl.experiments.compare import compare, default_methods
    from tcl_ssl.experiments.runner import parse_list

    supervised = bool(given_options(args).get("supervised", False))
    if args.methods:
        methods = parse_list(args.methods, what="--methods")
    else:
        methods = default_methods(supervised)
        if args.recipes:  # a recipe family names its methods: those with a file PREFIX-METHOD
            methods = [m for m in methods if recipe_exists(f"{args.recipes}-{m}")]
            if not methods:
                raise ConfigError(
                    f"no recipe {args.recipes}-METHOD exists for a method of this setting; give --methods"
                )
    seeds = parse_list(args.seeds, int, what="--seeds")
    configs = method_configs(args, methods)
    setting = "supervised" if next(iter(configs.values())).method.supervised else "self-supervised"
    out = Path(args.out or Path("comparisons") / setting)
    results = compare(
        configs,
        seeds,
        out,
        progress=print_progress,
        command=" ".join(["tcl-ssl", *args.argv]),
        plots="plots" not in given_options(args),
    )
    if results is None:  # processes other than 0 of a multi-process job print nothing
        return 0
    print((out / "results.md").read_text())
    print(f"results and plots: {out}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """``tcl-ssl sweep``."""
    # torch is imported when a command runs, not for --help
    from tcl_ssl.experiments.runner import parse_list
    from tcl_ssl.experiments.sweep import parse_axis, sweep

    axes: dict[str, list[Any]] = {}
    for text in args.grid:
        name, values = parse_axis(text)
        if name in axes:
            raise ConfigError(f"--grid names the axis {name!r} twice")
        axes[name] = values
    seeds = parse_list(args.seeds, int, what="--seeds")
    given = given_options(args)
    plots = "plots" not in given
    base = _base_config(args.config, given).replace(plots=False)
    out = Path(args.out or Path("sweeps") / base.method.name)
    selected = sweep(
        base,
        axes,
        seeds,
        out,
        metric=args.select,
        progress=print_progress,
        command=" ".join(["tcl-ssl", *args.argv]),
        plots=plots,
    )
    if selected is None:  # processes other than 0 of a multi-process job print nothing
        return 0
    print((out / "results.md").read_text())
    print(f"results and plots: {out}")
    return 0


def run_tune(args: argparse.Namespace) -> int:
    """``tcl-ssl tune``."""
    # torch is imported when a command runs, not for --help
    from tcl_ssl.experiments.runner import parse_list
    from tcl_ssl.experiments.tune import tune

    seeds = parse_list(args.seeds, int, what="--seeds")
    factors = parse_list(args.lr_factors, float, what="--lr-factors")
    base = _base_config(args.config, given_options(args)).replace(plots=False)
    out = Path(args.out or Path("tune") / base.method.name)
    recipe = None if args.recipe_prefix is None else Path(f"{args.recipe_prefix}-{base.method.name}.yaml")
    chosen = tune(
        base,
        out,
        seeds=seeds,
        metric=args.select,
        lr_factors=factors,
        recipe=recipe,
        progress=print_progress,
        command=" ".join(["tcl-ssl", *args.argv]),
    )
    if chosen is None:  # processes other than 0 of a multi-process job print nothing
        return 0
    print((out / "results.md").read_text())
    print(f"results: {out}" + (f"; recipe: {recipe}" if recipe else ""))
    return 0
