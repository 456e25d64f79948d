"""What the command line prints: tables of a run's figures and one line per run of a comparison."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcl_ssl.experiments.runner import Progress
    from tcl_ssl.runs import RunSummary

__all__ = ["format_metrics", "format_summary", "print_progress"]


def format_metrics(columns: dict[str, dict[str, float]], extra: dict[str, dict[str, float]] | None = None) -> str:
    """A Markdown table: one row per metric, one column per entry of ``columns`` (and of ``extra``)."""
    columns = columns | (extra or {})
    names = list(dict.fromkeys(k for c in columns.values() for k in c))
    lines = ["| metric (%) | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for name in names:
        cells = [f"{c[name]:.2f}" if name in c else "" for c in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summary(summary: RunSummary) -> str:
    """A short table of a run's final figures: validation and test side by side."""
    mode = "supervised" if summary.supervised else "self-supervised"
    seconds = summary.train_seconds or 0.0
    lines = [
        f"{summary.method} ({mode}) on {summary.dataset}, {summary.epochs} epochs, "
        f"{seconds:.0f} s of training; splits {summary.splits}",
        format_metrics(
            {"val": summary.val, "test": summary.test},
            {f"random init, {name}": summary.random_init[name] for name in ("val", "test")},
        ),
    ]
    online = summary.online_probe
    if online.final_val_top1 is not None and online.final_test_top1 is not None:
        best = (
            "" if online.best_val_top1 is None else f"; best val {online.best_val_top1:.2f} (epoch {online.best_epoch})"
        )
        lines.append(
            f"online linear probe top-1: val {online.final_val_top1:.2f}, test {online.final_test_top1:.2f}{best}"
        )
    lines.append(f"run directory: {summary.run_dir}")
    return "\n".join(lines)


def print_progress(event: Progress) -> None:
    """One line on stderr per run of a comparison or sweep: which of how many, and the time left."""
    head = f"[{event.index}/{event.total}] {event.run.group} seed {event.run.seed}"
    figures = ""
    if event.summary is not None:
        test = event.summary.test
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
        line = f"{head}: finished in {(event.seconds or 0.0) / 60:.1f} min ({figures})"
    print(f"tcl-ssl: {line}", file=sys.stderr, flush=True)
