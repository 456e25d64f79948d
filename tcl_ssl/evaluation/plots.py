"""Pictures of a run: training curves, a 2-D embedding of test features, the probe's confusion matrix."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from tcl_ssl.safe_io import save_figure

if TYPE_CHECKING:
    from tcl_ssl.data import ImageData
    from tcl_ssl.evaluation.suite import Evaluation

#: per-epoch columns of ``metrics.csv`` drawn by :func:`plot_curves`, and their labels
CURVES = {
    "train_loss_epoch": "training loss",
    "val_knn_top1": "kNN top-1 on validation (%)",
    "val_online_top1": "online linear probe top-1 on validation (%)",
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (files only, no display)."""
    import matplotlib  # deferred: matplotlib is needed only for pictures, and slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after choosing the Agg backend

    return plt


def metrics_files(run_dir: Path) -> list[Path]:
    """A run's Lightning ``logs/version_N/metrics.csv`` files, oldest first (one per resume)."""
    return sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))


def read_epoch_metrics(metrics_csvs: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(epoch, value), ...]}`` of the per-epoch columns in Lightning ``metrics.csv``
    files (a resumed run has one per ``logs/version_N``; later files win)."""
    series: dict[str, dict[int, float]] = {name: {} for name in CURVES}
    for path in metrics_csvs:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for name in CURVES:
                    if row.get(name) not in (None, "") and row.get("epoch") not in (None, ""):
                        series[name][int(row["epoch"])] = float(row[name])
    return {name: sorted(points.items()) for name, points in series.items() if points}


def plot_curves(metrics_csvs: list[Path], out: Path, title: str = "") -> Path:
    """Training loss and the validation monitors over epochs, one panel each."""
    plt = pyplot()
    series = read_epoch_metrics(metrics_csvs)
    if not series:
        raise ValueError(f"no per-epoch metrics ({', '.join(CURVES)}) in {[str(p) for p in metrics_csvs]}")
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, points) in zip(axes[0], series.items()):
        epochs, values = zip(*points)
        ax.plot(np.asarray(epochs) + 1, values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(CURVES[name], fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out


def plot_embedding(
    features: Tensor, labels: Tensor, out: Path, max_points: int = 2000, seed: int = 0, title: str = ""
) -> Path:
    """t-SNE (scikit-learn) of up to ``max_points`` feature rows ``(N, F)``, coloured by label."""
    from sklearn.manifold import TSNE  # deferred: scikit-learn is slow to import

    plt = pyplot()
    rng = np.random.default_rng(seed)
    index = np.sort(rng.permutation(features.shape[0])[:max_points])
    x = features[index].numpy()
    y = labels[index].numpy()
    points = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed).fit_transform(
        x
    )
    fig, ax = plt.subplots(figsize=(5, 5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=y, cmap="tab10" if y.max() < 10 else "tab20", s=4)
    if y.max() < 20:
        ax.legend(*scatter.legend_elements(), fontsize=7, markerscale=0.8, loc="best", title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(x)} test features", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(labels: Tensor, predictions: Tensor, num_classes: int, out: Path, title: str = "") -> Path:
    """The confusion matrix (rows: true class, normalised per row) of predictions against labels."""
    from sklearn.metrics import ConfusionMatrixDisplay  # deferred: scikit-learn is slow to import

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ConfusionMatrixDisplay.from_predictions(
        labels.numpy(),
        predictions.numpy(),
        labels=list(range(num_classes)),
        normalize="true",
        ax=ax,
        colorbar=False,
        include_values=num_classes <= 12,
        values_format=".2f",
        cmap="Blues",
    )
    ax.set_title(title or "linear probe on test, rows normalised", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out


def write_run_plots(
    folder: Path, evaluation: Evaluation, data: ImageData, metrics_csvs: list[Path], title: str = ""
) -> list[Path]:
    """A run's pictures: ``curves.png`` (if the logs have per-epoch metrics), ``tsne.png`` of the
    test features, ``confusion.png`` of the linear probe on test (if it ran)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if metrics_csvs and read_epoch_metrics(metrics_csvs):
        written.append(plot_curves(metrics_csvs, folder / "curves.png", title))
    if evaluation.test_features is not None:
        written.append(plot_embedding(evaluation.test_features, data.test.labels, folder / "tsne.png"))
    if evaluation.test_linear_predictions is not None:
        written.append(
            plot_confusion(
                data.test.labels, evaluation.test_linear_predictions, data.num_classes, folder / "confusion.png"
            )
        )
    return written
