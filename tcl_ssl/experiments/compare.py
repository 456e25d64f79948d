"""Many pretraining runs under one budget -> a results table and plots.

``tcl-ssl compare`` runs a list of methods x a list of seeds (:func:`plan_comparison`), every
run with the same budget (the options declared ``budget=True``: dataset and splits, backbone,
epochs, batch size, evaluation, devices), each method with its own recipe (its published
defaults, or a recipe file per method), and writes::

    <out>/runs/<method>-seed<k>/   one run directory per run (see tcl_ssl.runs)
    <out>/results.md               the table: mean ± sample std over seeds, and the budget
    <out>/results.csv              the same figures, one row per method (mean and std columns)
    <out>/results.json             the budget, each method's settings, every run's figures
    <out>/plots/curves.png         validation kNN / online-probe top-1 per epoch (mean, band over seeds)
    <out>/plots/bars.png           test kNN and linear top-1 per method, error bars over seeds

Finished runs are reused when the command is run again and interrupted ones resume from their
last checkpoint, so an interrupted comparison continues where it stopped; a run directory that
holds a different configuration is refused rather than mixed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import ImageData
from tcl_ssl.experiments.runner import PlannedRun, Progress, execute_runs, slug
from tcl_ssl.experiments.tables import GroupResult, collect, write_results
from tcl_ssl.methods import available_methods, method_class
from tcl_ssl.processes import is_process_zero

__all__ = ["check_budget", "compare", "default_methods", "plan_comparison"]


def default_methods(supervised: bool) -> list[str]:
    """The methods a comparison runs by default: every registered method that trains in the
    setting and is compared in it (:attr:`~tcl_ssl.methods.Method.compared_in`)."""
    setting = "supervised" if supervised else "self-supervised"
    methods = []
    for name in available_methods():
        cls = method_class(name)
        if (cls.with_labels if supervised else cls.without_labels) and setting in cls.compared_in:
            methods.append(name)
    return methods


def check_budget(configs: dict[str, PretrainConfig]) -> dict[str, Any]:
    """The budget the configurations share (:meth:`PretrainConfig.budget_keys`).

    Raises:
        ValueError: naming the option and the groups where it differs.
    """
    budget: dict[str, Any] = {}
    first_group = next(iter(configs))
    for key in PretrainConfig.budget_keys():
        values = {group: config.get(key) for group, config in configs.items()}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            listed = ", ".join(f"{group}: {value!r}" for group, value in values.items())
            raise ValueError(f"the runs of a comparison must share one budget, but {key} differs ({listed})")
        budget[key] = values[first_group]
    return budget


def plan_comparison(configs: dict[str, PretrainConfig], seeds: Sequence[int], out: Path) -> list[PlannedRun]:
    """Every group's configuration x every seed, seed by seed (so that an interrupted comparison
    has whole seeds done first), in ``<out>/runs/<group>-seed<k>``."""
    if not configs:
        raise ValueError("nothing to compare: give at least one method")
    if not seeds:
        raise ValueError("give at least one seed")
    names = [slug(group) for group in configs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"groups {list(configs)} would share run directories ({', '.join(clashes)}); name them apart")
    return [
        PlannedRun(group, seed, config.replace(seed=seed, out=str(out / "runs" / f"{slug(group)}-seed{seed}")))
        for seed in seeds
        for group, config in configs.items()
    ]


def compare(
    configs: dict[str, PretrainConfig],
    seeds: Sequence[int],
    out: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    plots: bool = True,
    data: ImageData | None = None,
) -> list[GroupResult] | None:
    """Run every method's configuration (``{method: config}``, equal budget) with every seed in
    ``out``, reusing finished runs; write the results files and plots; return the results
    (``None`` on processes other than 0 of a multi-process job, which write nothing).

    Args:
        configs: one configuration per table row.
        seeds: the seeds every row runs.
        out: the comparison directory.
        progress: called before and after each run.
        command: the command line, recorded in the results.
        plots: draw the curves and bars.
        data: the dataset every run uses (default: loaded from the configurations).
    """
    budget = check_budget({group: config.resolved() for group, config in configs.items()})
    runs = plan_comparison(configs, seeds, out)
    summaries = execute_runs(runs, progress, data)
    if not is_process_zero():  # the other processes of a DDP job: their pretrain returned no summary
        return None
    results = collect(runs, summaries)
    setting = "supervised" if budget["supervised"] else "self-supervised"
    header = {"kind": "compare", "command": command, "seeds": list(seeds), "budget": budget}
    write_results(out, results, header, f"Comparison, {setting}, {len(seeds)} seed(s)")
    if plots:
        from tcl_ssl.experiments.plots import plot_bars, plot_curves  # matplotlib, only when drawing

        plot_curves(results, out / "plots" / "curves.png")
        plot_bars(results, out / "plots" / "bars.png")
    return results
