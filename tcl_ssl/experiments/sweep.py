"""A grid of one method's hyper-parameters, chosen on validation -> a table, sensitivities, heat-maps.

``tcl-ssl sweep`` runs every cell of a grid (``--grid k1=0,10,30 --grid temperature=0.1,0.2``)
x every seed with :func:`tcl_ssl.experiments.runner.execute_runs` (finished runs reused, interrupted ones
resumed), selects the cell with the best mean validation figure (``--select``, default kNN
top-1), and writes into ``<out>``: ``results.md`` / ``.csv`` / ``.json`` (every cell, the
selected one starred, its test figures reported; and for each axis the figure along it with the
other axes at the selected cell's values), and ``plots/heatmap-<a>-<b>.png`` for each pair of
swept axes (or ``plots/<axis>.png`` for a single axis).

An axis is an option declared sweepable (``lr``, ``batch_size``, ``num_views``, ``epochs``, ...;
see :meth:`~tcl_ssl.config.PretrainConfig.sweep_keys`), an option of the method (``temperature``, ``k1``, ``k2``, ...), an
option of the augmentation pipeline (``weak_view``, ``min_scale``, ...), or ``k1_rel``: k1 given relative to
e^(1/t), i.e. ``k1 = k1_rel * exp(1 / temperature)``. The k1 term of TCL's denominator carries
no temperature while the positive and negative terms carry 1/t, so the same k1 weighs very
differently at different temperatures; ``k1_rel`` keeps their ratio (the paper's k1 = 5000 at
t = 0.1 is k1_rel = 0.227).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import augmentations
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import ImageData
from tcl_ssl.experiments.runner import PlannedRun, Progress, execute_runs, slug
from tcl_ssl.experiments.tables import FIGURES, GroupResult, collect, format_results, format_spread, write_results
from tcl_ssl.methods import method_class
from tcl_ssl.processes import is_process_zero

__all__ = ["SELECTABLE", "cell_config", "parse_axis", "plan_sweep", "select", "sweep"]

#: figures a sweep may select on (validation only: the test split chooses nothing)
SELECTABLE = ("val_knn_top1", "val_linear_top1")
#: the table's columns
SWEEP_FIGURES = (
    "val_knn_top1",
    "val_linear_top1",
    "test_knn_top1",
    "test_linear_top1",
    "random_init_val_knn_top1",
    "random_init_test_knn_top1",
    "train_seconds",
)


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``NAME=V1,V2,...`` -> ``(name, values)``; values are JSON numbers / booleans where they parse.

    Raises:
        ValueError: for a malformed axis or a value named twice.
    """
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not values.strip():
        raise ValueError(f"--grid must be NAME=V1,V2,..., got {text!r}")
    parsed = []
    for item in (v.strip() for v in values.split(",")):
        if not item:
            continue
        try:
            parsed.append(json.loads(item))
        except json.JSONDecodeError:
            parsed.append(item)
    if len({json.dumps(v) for v in parsed}) != len(parsed):
        raise ValueError(f"--grid {name} names a value twice: {values!r}")
    return name, parsed


def axis_kinds(base: PretrainConfig) -> dict[str, str]:
    """Every axis ``base``'s method can be swept along: ``option`` (a sweepable option by key),
    ``method`` (an option of the method), ``augmentation`` (an option of its augmentation
    pipeline) or ``k1_rel`` (k1 relative to e^(1/t), for methods with k1)."""
    resolved = base.resolved()
    kinds = {
        key: "option"
        for key, info in PretrainConfig.options().items()
        if info.spec.sweep and info.hint != dict[str, Any]
    }
    method_options = method_class(base.method.name).options()
    kinds |= {name: "method" for name in method_options}
    assert resolved.method.augmentation is not None  # resolved() sets it
    pipeline_options = augmentations.options(resolved.method.augmentation)
    kinds |= {name: "augmentation" for name in pipeline_options if name != "num_views" and name not in kinds}
    if "k1" in method_options:
        kinds["k1_rel"] = "k1_rel"
    return kinds


def check_axes(axes: dict[str, list[Any]], base: PretrainConfig) -> None:
    """Raise ``ValueError`` for an axis the method cannot take, or a pair that clashes."""
    if not axes:
        raise ValueError("the grid is empty: give at least one --grid NAME=V1,V2,...")
    allowed = axis_kinds(base)
    for name, values in axes.items():
        if name not in allowed:
            raise ValueError(
                f"cannot sweep {name!r} for method {base.method.name!r}; axes: {', '.join(sorted(allowed))}"
            )
        if not values:
            raise ValueError(f"--grid {name} has no values")
    if "k1_rel" in axes and "k1" in axes:
        raise ValueError("sweep k1 or k1_rel (k1 relative to e^(1/t)), not both")
    if "k1_rel" in axes and not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in axes["k1_rel"]
    ):
        raise ValueError(f"k1_rel values must be numbers >= 0, got {axes['k1_rel']}")
    if "k1_rel" in axes and "temperature" not in axes and base_temperature(base) is None:
        raise ValueError(f"k1_rel needs a temperature, and method {base.method.name!r} has none")


def base_temperature(base: PretrainConfig) -> float | None:
    """The temperature ``base`` trains with: its own option, else the method's default for its setting."""
    options = base.method.options
    if options.get("temperature") is not None:
        return float(options["temperature"])
    value = method_class(base.method.name).resolved_options(base.method.supervised).get("temperature")
    return None if value is None else float(value)


def cell_config(base: PretrainConfig, cell: dict[str, Any]) -> PretrainConfig:
    """``base`` with one cell's values set (``k1_rel`` turned into k1 at the cell's temperature)."""
    kinds = axis_kinds(base)
    scalars: dict[str, Any] = {}
    method_options = dict(base.method.options)
    augmentation_options = dict(base.method.augmentation_options)
    for name, value in cell.items():
        kind = kinds.get(name, "method")
        if kind == "option":
            scalars[name] = value
        elif kind == "augmentation":
            augmentation_options[name] = value
        elif kind == "method":
            method_options[name] = value
    if "k1_rel" in cell:
        temperature = method_options.get("temperature", base_temperature(base))
        if temperature is None:  # check_axes refuses k1_rel without a temperature
            raise ValueError(f"k1_rel needs a temperature, and method {base.method.name!r} has none")
        method_options["k1"] = float(cell["k1_rel"]) * math.exp(1.0 / float(temperature))
    return base.replace(method_options=method_options, augmentation_options=augmentation_options, **scalars)


def cell_label(cell: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in cell.items())


def plan_sweep(
    base: PretrainConfig, axes: dict[str, list[Any]], seeds: Sequence[int], out: Path
) -> tuple[list[dict[str, Any]], list[PlannedRun]]:
    """The grid's cells (in ``itertools.product`` order of the axes) and their runs, seed by seed."""
    check_axes(axes, base)
    if not seeds:
        raise ValueError("give at least one seed")
    cells = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    names = [slug(cell_label(cell)) for cell in cells]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"grid cells would share run directories ({', '.join(clashes)}); give distinct values")
    runs = [
        PlannedRun(
            cell_label(cell),
            seed,
            cell_config(base, cell).replace(seed=seed, out=str(out / "runs" / f"{slug(cell_label(cell))}-seed{seed}")),
        )
        for seed in seeds
        for cell in cells
    ]
    return cells, runs


def select(results: Sequence[GroupResult], metric: str) -> GroupResult:
    """The result with the highest mean ``metric`` (a validation figure)."""
    if metric not in SELECTABLE:
        raise ValueError(f"select on a validation figure: one of {', '.join(SELECTABLE)}, got {metric!r}")
    scored = [r for r in results if r.stats[metric]["mean"] is not None]
    if not scored:
        raise ValueError(f"no run reported {metric} (is the protocol it needs among --protocols?)")
    return max(scored, key=lambda r: r.stats[metric]["mean"])


def along_axis(
    cells: Sequence[dict[str, Any]], results: Sequence[GroupResult], best: dict[str, Any], axis: str
) -> list[tuple[Any, GroupResult]]:
    """The cells that differ from ``best`` only in ``axis``, in the axis's order, with their results."""
    by_label = {r.group: r for r in results}
    line = []
    for cell in cells:
        if all(cell[a] == best[a] for a in cell if a != axis):
            line.append((cell[axis], by_label[cell_label(cell)]))
    return line


def sensitivity(cells, results, best: dict[str, Any], metric: str) -> str:
    """A Markdown table: per axis, the metric at each of its values (others at the selected cell)
    and the range (largest minus smallest mean)."""
    lines = [
        f"| axis | {FIGURES[metric]} at each value (other axes at the selected cell) | range |",
        "|---|---|---:|",
    ]
    for axis in best:
        line = along_axis(cells, results, best, axis)
        means = [r.stats[metric]["mean"] for _, r in line if r.stats[metric]["mean"] is not None]
        cells_text = "; ".join(f"{value}: {format_spread(r.stats[metric], 2)}" for value, r in line)
        spread_text = f"{max(means) - min(means):.2f}" if len(means) > 1 else "-"
        lines.append(f"| {axis} | {cells_text} | {spread_text} |")
    return "\n".join(lines)


def slice_values(
    results: Sequence[GroupResult], best: dict[str, Any], axes: dict[str, list[Any]], row: str, col: str, metric: str
) -> np.ndarray:
    """The mean ``metric`` ``(len(axes[row]), len(axes[col]))`` over ``row`` x ``col`` with the other
    axes at ``best``'s values (NaN where no run reported it)."""
    by_label = {r.group: r for r in results}
    values = np.full((len(axes[row]), len(axes[col])), math.nan)
    for i, a in enumerate(axes[row]):
        for j, b in enumerate(axes[col]):
            cell = {k: (a if k == row else b if k == col else best[k]) for k in axes}
            mean = by_label[cell_label(cell)].stats[metric]["mean"]
            values[i, j] = math.nan if mean is None else mean
    return values


def write_heatmaps(
    cells, results, best: dict[str, Any], axes: dict[str, list[Any]], metric: str, out: Path
) -> list[Path]:
    """A heat-map of ``metric`` for each pair of swept axes with more than one value (the other
    axes at the selected cell's values); a line with error bars when only one axis varies."""
    from tcl_ssl.experiments.plots import plot_heatmap, plot_line  # matplotlib, only when drawing

    varied = [a for a, values in axes.items() if len(values) > 1]
    paths = []
    if len(varied) == 1:
        axis = varied[0]
        line = along_axis(cells, results, best, axis)
        paths.append(
            plot_line(
                [v for v, _ in line],
                [math.nan if r.stats[metric]["mean"] is None else r.stats[metric]["mean"] for _, r in line],
                [r.stats[metric]["std"] or 0.0 for _, r in line],
                axis,
                FIGURES[metric],
                f"{FIGURES[metric]} (mean ± std over seeds)",
                out / f"{slug(axis)}.png",
            )
        )
    for row, col in itertools.combinations(varied, 2):
        others = ", ".join(f"{k}={v}" for k, v in best.items() if k not in (row, col))
        title = f"{FIGURES[metric]}, mean over seeds" + (f" ({others})" if others else "")
        mark = (axes[row].index(best[row]), axes[col].index(best[col]))
        paths.append(
            plot_heatmap(
                slice_values(results, best, axes, row, col, metric),
                axes[row],
                axes[col],
                row,
                col,
                title,
                out / f"heatmap-{slug(row)}-{slug(col)}.png",
                mark,
            )
        )
    return paths


def sweep(
    base: PretrainConfig,
    axes: dict[str, list[Any]],
    seeds: Sequence[int],
    out: Path,
    *,
    metric: str = "val_knn_top1",
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    plots: bool = True,
    data: ImageData | None = None,
) -> tuple[GroupResult, list[GroupResult]] | None:
    """Run the grid over ``axes`` from ``base`` with every seed in ``out``; write the results and
    heat-maps; return the selected cell's result and every cell's (``None`` on processes other
    than 0 of a multi-process job, which run the same runs and write nothing)."""
    if metric not in SELECTABLE:
        raise ValueError(f"select on a validation figure: one of {', '.join(SELECTABLE)}, got {metric!r}")
    cells, runs = plan_sweep(base, axes, seeds, out)
    summaries = execute_runs(runs, progress, data)
    if not is_process_zero():
        return None
    results = collect(runs, summaries)
    best = select(results, metric)
    best_cell = next(cell for cell in cells if cell_label(cell) == best.group)
    resolved = base.resolved()
    fixed = {key: resolved.get(key) for key in PretrainConfig.budget_keys() if key not in axes}
    header = {
        "kind": "sweep",
        "command": command,
        "method": base.method.name,
        "seeds": list(seeds),
        "axes": axes,
        "selected_on": metric,
        "selected": best_cell,
        "budget": fixed,
    }
    text = (
        f"Selected on {FIGURES[metric]}: **{best.group}** (test figures of that cell: "
        f"kNN {format_spread(best.stats['test_knn_top1'], 2)}, linear {format_spread(best.stats['test_linear_top1'], 2)}).\n\n"
        + sensitivity(cells, results, best_cell, metric)
    )
    write_results(
        out,
        results,
        header,
        f"Sweep of {base.method.name} ({'supervised' if base.method.supervised else 'self-supervised'}), "
        f"{len(seeds)} seed(s)",
        table=format_results(results, SWEEP_FIGURES, mark=best.group),
        extra_markdown=text,
    )
    if plots:
        write_heatmaps(cells, results, best_cell, axes, metric, out / "plots")
    return best, results
