"""Pictures of a comparison or sweep: validation curves over seeds, bars with error bars, heat-maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcl_ssl.evaluation.plots import CURVES, pyplot
from tcl_ssl.experiments.tables import FIGURES, GroupResult
from tcl_ssl.safe_io import save_figure


def _save(fig, out: Path, **options) -> Path:
    fig.tight_layout()
    save_figure(fig, out, dpi=120, **options)
    pyplot().close(fig)
    return out


def mean_curve(runs: Sequence[Sequence[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(epochs, mean, low, high)`` (epochs 1-based) over the runs' ``[(epoch, value)]`` series, at
    the epochs every run has; ``low``/``high`` are the smallest and largest run's value."""
    common = sorted(set.intersection(*(set(e for e, _ in points) for points in runs))) if runs else []
    if not common:
        return np.array([]), np.array([]), np.array([]), np.array([])
    values = np.array([[dict(points)[e] for e in common] for points in runs])
    return np.asarray(common) + 1, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_curves(
    results: Sequence[GroupResult], out: Path, metrics: Sequence[str] = ("val_knn_top1", "val_online_top1")
) -> Path:
    """One panel per metric: each group's mean over seeds per epoch, with a band from its lowest to
    its highest seed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.6), squeeze=False)
    colors = plt.get_cmap("tab10" if len(results) <= 10 else "tab20").colors
    for ax, metric in zip(axes[0], metrics):
        for index, result in enumerate(results):
            epochs, mean, low, high = mean_curve(result.curves.get(metric, []))
            if len(epochs) == 0:
                continue
            color = colors[index % len(colors)]
            ax.plot(epochs, mean, color=color, marker="o", markersize=3, label=result.group)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_title(CURVES[metric], fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("mean over seeds; band: lowest to highest seed", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, out, bbox_inches="tight")  # keeps the legend beside the panels


def plot_bars(
    results: Sequence[GroupResult], out: Path, figures: Sequence[str] = ("test_knn_top1", "test_linear_top1")
) -> Path:
    """Grouped bars of each group's mean per figure, error bars one sample std over seeds, and
    the random-init backbone's test kNN top-1 as a dashed line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(results) + 2), 3.8))
    width = 0.8 / len(figures)
    x = np.arange(len(results))
    for i, name in enumerate(figures):
        means = [r.stats[name]["mean"] or 0.0 for r in results]
        stds = [r.stats[name]["std"] or 0.0 for r in results]
        bars = ax.bar(x + (i - (len(figures) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=FIGURES[name])
        ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], fontsize=7, padding=2)
    random_init = [r.stats["random_init_test_knn_top1"]["mean"] for r in results]
    if any(v is not None for v in random_init):
        ax.axhline(
            np.mean([v for v in random_init if v is not None]),
            color="gray",
            linestyle="--",
            label="random-init backbone, kNN test",
        )
    values = [r.stats[n]["mean"] for r in results for n in figures if r.stats[n]["mean"] is not None]
    if values:
        ax.set_ylim(max(0.0, min(values + [v for v in random_init if v is not None]) - 10), min(100.0, max(values) + 8))
    ax.set_xticks(x, [r.group for r in results], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


def plot_heatmap(
    values: np.ndarray,
    rows: Sequence,
    cols: Sequence,
    row_name: str,
    col_name: str,
    title: str,
    out: Path,
    mark: tuple[int, int] | None = None,
) -> Path:
    """A heat-map of ``values`` ``(len(rows), len(cols))`` (NaN: no run), each cell annotated; ``mark``
    outlines one cell (the selected one)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.8 * len(rows) + 1.8))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] < np.nanmean(values) else "black",
                )
    if mark is not None:
        ax.add_patch(plt.Rectangle((mark[1] - 0.5, mark[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, out)


def plot_line(
    xs: Sequence, means: Sequence[float], stds: Sequence[float], name: str, ylabel: str, title: str, out: Path
) -> Path:
    """One swept axis: the mean per value with error bars (one sample std over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    ax.errorbar(range(len(xs)), means, yerr=stds, marker="o", capsize=3)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, out)
