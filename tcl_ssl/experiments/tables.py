"""The results of many runs: figures grouped into rows, mean ± spread over seeds, and the
``results.md`` / ``.csv`` / ``.json`` files of a comparison or sweep."""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcl_ssl.config import PretrainConfig
from tcl_ssl.evaluation.plots import metrics_files, read_epoch_metrics
from tcl_ssl.experiments.runner import PlannedRun
from tcl_ssl.methods import method_class
from tcl_ssl.runs import RunSummary, write_json, write_text

__all__ = [
    "FIGURES",
    "TABLE_FIGURES",
    "GroupResult",
    "collect",
    "format_results",
    "format_spread",
    "run_settings",
    "spread",
    "write_results",
]

#: every figure of a run's summary a table can show: name -> header; top-1/top-5 in percent
FIGURES = {
    "val_knn_top1": "kNN top-1, val",
    "val_linear_top1": "linear top-1, val",
    "test_knn_top1": "kNN top-1, test",
    "test_knn_top5": "kNN top-5, test",
    "test_linear_top1": "linear top-1, test",
    "test_linear_top5": "linear top-5, test",
    "random_init_val_knn_top1": "random init kNN, val",
    "random_init_val_linear_top1": "random init linear, val",
    "random_init_test_knn_top1": "random init kNN, test",
    "random_init_test_linear_top1": "random init linear, test",
    "online_val_top1": "online probe top-1, val",
    "train_seconds": "training s",
    "wall_seconds": "run s",
    "images_per_second": "images/s",
    "peak_rss_mib": "peak RSS MiB",
    "peak_cuda_mib": "peak CUDA MiB",
}

#: the figures of a comparison's table, in its column order
TABLE_FIGURES = (
    "test_knn_top1",
    "test_knn_top5",
    "test_linear_top1",
    "test_linear_top5",
    "val_knn_top1",
    "val_linear_top1",
    "random_init_val_knn_top1",
    "random_init_test_knn_top1",
    "train_seconds",
    "wall_seconds",
    "images_per_second",
    "peak_rss_mib",
)

#: figures shown without decimals
_WHOLE_NUMBERS = ("images_per_second", "peak_rss_mib", "peak_cuda_mib", "train_seconds", "wall_seconds")


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the values, ``None`` left out; ``std`` is the sample standard
    deviation (``None`` for fewer than two values, ``mean`` ``None`` for none)."""
    present = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.mean(present) if present else None,
        "std": statistics.stdev(present) if len(present) > 1 else None,
        "n": len(present),
    }


def format_spread(stats: dict[str, Any], digits: int = 1) -> str:
    """``mean ± std`` (the mean alone for one value, ``-`` for none)."""
    if stats["mean"] is None:
        return "-"
    if stats["std"] is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


@dataclass
class GroupResult:
    """The runs of one table row over seeds: their figures, mean ± std, and validation curves.

    Attributes:
        group: the row's name.
        settings: what its runs trained with beyond the budget (:func:`run_settings`).
        runs: ``{"seed", "run_dir", "figures"}`` per run.
        stats: figure -> ``{"mean", "std", "n"}``.
        curves: metric -> per run ``[(epoch, value)]``.
    """

    group: str
    settings: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)


def run_settings(config: PretrainConfig) -> dict[str, Any]:
    """What a row's runs were trained with, beyond the budget: the method's resolved options."""
    resolved = config.resolved()
    method, optim = resolved.method, resolved.optim
    options = method_class(method.name).resolved_options(method.supervised) | method.options
    return {
        "method": method.name,
        "augmentation": method.augmentation,
        "augmentation_options": method.augmentation_options,
        "num_views": method.num_views,
        "optimizer": optim.optimizer,
        "lr": optim.lr,
        "weight_decay": optim.weight_decay,
        "warmup_epochs": optim.warmup_epochs,
        "method_options": options,
        "recipe": resolved.run.recipe,
    }


def collect(runs: Sequence[PlannedRun], summaries: Sequence[RunSummary | None]) -> list[GroupResult]:
    """The runs' figures grouped by ``group`` (in plan order), with mean ± std over seeds."""
    results: dict[str, GroupResult] = {}
    for run, summary in zip(runs, summaries):
        if summary is None:
            continue
        result = results.setdefault(run.group, GroupResult(run.group, run_settings(run.config)))
        result.runs.append({"seed": run.seed, "run_dir": str(run.run_dir), "figures": summary.figures()})
        for metric, points in read_epoch_metrics(metrics_files(run.run_dir)).items():
            result.curves.setdefault(metric, []).append(points)
    for result in results.values():
        result.stats = {name: spread([r["figures"][name] for r in result.runs]) for name in FIGURES}
    return list(results.values())


def settings_text(settings: dict[str, Any]) -> str:
    """A short description of a row's settings for a table cell."""
    parts = [
        f"{settings['optimizer']} lr {settings['lr']:g}",
        f"wd {settings['weight_decay']:g}",
        f"warm-up {settings['warmup_epochs']}",
    ]
    options = settings["method_options"]
    for name in ("temperature", "k1", "k2"):
        if options.get(name) is not None:
            parts.append(f"{'t' if name == 'temperature' else name} {options[name]:g}")
    if settings["augmentation_options"]:
        parts += [f"{k}={v}" for k, v in sorted(settings["augmentation_options"].items())]
    return ", ".join(parts)


def format_results(
    results: Sequence[GroupResult], figures: Sequence[str] = TABLE_FIGURES, mark: str | None = None
) -> str:
    """A Markdown table: one row per group, ``mean ± std`` over its seeds per figure; ``mark`` is starred."""
    header = "| | seeds | " + " | ".join(FIGURES[name] for name in figures) + " | settings |"
    lines = [header, "|---|---|" + "---:|" * len(figures) + "---|"]
    for result in results:
        cells = [format_spread(result.stats[name], 0 if name in _WHOLE_NUMBERS else 2) for name in figures]
        name = f"**{result.group}** ★" if result.group == mark else result.group
        seeds = ",".join(str(r["seed"]) for r in result.runs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {settings_text(result.settings)} |")
    return "\n".join(lines)


def write_results(
    out: Path,
    results: Sequence[GroupResult],
    header: dict[str, Any],
    title: str,
    table: str | None = None,
    extra_markdown: str = "",
) -> dict[str, Path]:
    """``results.md``, ``results.csv`` and ``results.json`` in ``out`` (each written atomically); their paths."""
    paths = {name: out / f"results.{name}" for name in ("md", "csv", "json")}
    write_json(paths["json"], header | {"groups": [dataclasses.asdict(r) for r in results]})
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\r\n")
    writer.writerow(["group", "seeds"] + [f"{name}_{part}" for name in FIGURES for part in ("mean", "std")])
    for r in results:
        row = [r.group, " ".join(str(run["seed"]) for run in r.runs)]
        row += [
            ("" if r.stats[name][part] is None else f"{r.stats[name][part]:.4f}")
            for name in FIGURES
            for part in ("mean", "std")
        ]
        writer.writerow(row)
    write_text(paths["csv"], rows.getvalue())
    budget = "\n".join(f"- {name}: `{value}`" for name, value in header.get("budget", {}).items())
    command = header.get("command")
    write_text(
        paths["md"],
        f"# {title}\n\n"
        + (f"Command: `{command}`\n\n" if command else "")
        + "Figures: mean ± sample standard deviation over seeds; top-1/top-5 in percent. Nothing was chosen "
        "on the test split. Times of a run resumed after an interruption count its last part only.\n\n"
        + (table or format_results(results))
        + "\n\n"
        + (extra_markdown + "\n\n" if extra_markdown else "")
        + ("Budget (equal for every row):\n\n" + budget + "\n" if budget else ""),
    )
    return paths
