"""Summaries of finished runs: mean and spread over seeds of the figures in their ``summary.json``.

``tcl-ssl summarize RUN_DIR ...`` groups run directories by their configuration (everything in
``config.json`` but the seed and the paths) and prints one Markdown row per group: kNN and
linear-probe top-1 on the validation split (for choosing) and on the test split (for
reporting), the random-init backbone's test figures, and the training time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: config.json fields that differ between the seeds of one configuration
_PER_RUN = {"seed", "out", "run_dir", "resume"}


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(config, summary)`` of a finished run directory; ``config["epochs"]`` is the number
    the run finished with (a run resumed with more epochs keeps its first ``config.json``)."""
    files = {name: run_dir / f"{name}.json" for name in ("config", "summary")}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ValueError(f"{run_dir} is not a finished run: missing {', '.join(missing)}")
    config, summary = (json.loads(path.read_text()) for path in files.values())
    if not {"val", "test", "random_init"} <= set(summary):
        raise ValueError(f"{run_dir}/summary.json was written by an older tcl-ssl (no val/test figures); rerun it")
    return config | {"epochs": summary.get("epochs", config.get("epochs"))}, summary


def _key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in _PER_RUN}, sort_keys=True)


def _label(config: dict[str, Any], differing: set[str]) -> str:
    """``method (setting)`` and the configuration fields that tell this group from the others."""
    label = f"{config['method']} ({'supervised' if config['supervised'] else 'self-supervised'})"
    extras = []
    for field in sorted(differing - {"method", "supervised", "method_defaults"}):
        value = config.get(field)
        if isinstance(value, dict):
            extras += [f"{k}={v}" for k, v in sorted(value.items())]
        else:
            extras.append(f"{field}={value}")
    return label + (", " + ", ".join(extras) if extras else "")


def _get(*keys: str):
    """A reader of ``summary[keys[0]][keys[1]]...`` (``None`` where a level is missing)."""

    def read(summary: dict[str, Any]) -> float | None:
        value: Any = summary
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return None if value is None else float(value)

    return read


#: every figure read from a run's summary.json: name -> (header, reader); top-1/top-5 in percent
FIGURES = {
    "val_knn_top1": ("kNN top-1, val", _get("val", "knn_top1")),
    "val_linear_top1": ("linear top-1, val", _get("val", "linear_top1")),
    "test_knn_top1": ("kNN top-1, test", _get("test", "knn_top1")),
    "test_knn_top5": ("kNN top-5, test", _get("test", "knn_top5")),
    "test_linear_top1": ("linear top-1, test", _get("test", "linear_top1")),
    "test_linear_top5": ("linear top-5, test", _get("test", "linear_top5")),
    "random_init_test_knn_top1": ("random init kNN, test", _get("random_init", "test", "knn_top1")),
    "random_init_test_linear_top1": ("random init linear, test", _get("random_init", "test", "linear_top1")),
    "online_val_top1": ("online probe top-1, val", _get("online_probe", "final_val_top1")),
    "train_seconds": ("training s", _get("train_seconds")),
    "wall_seconds": ("run s", _get("wall_seconds")),
    "images_per_second": ("images/s", _get("images_per_second")),
    "peak_rss_mib": ("peak RSS MiB", _get("peak_memory", "host_rss_mib")),
    "peak_cuda_mib": ("peak CUDA MiB", _get("peak_memory", "cuda_allocated_mib")),
}

#: the columns of ``tcl-ssl summarize``'s table
COLUMNS = {
    name: FIGURES[name]
    for name in (
        "val_knn_top1",
        "val_linear_top1",
        "test_knn_top1",
        "test_linear_top1",
        "random_init_test_knn_top1",
        "random_init_test_linear_top1",
        "train_seconds",
    )
}


def read_figures(summary: dict[str, Any]) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` in a run's summary (``None`` where it has none)."""
    return {name: read(summary) for name, (_, read) in FIGURES.items()}


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


def summarize(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per configuration: its label, seeds, and the mean/std of the runs' figures.

    Rows keep the order in which each configuration first appears in ``run_dirs``.
    """
    groups: dict[str, list[tuple[dict, dict]]] = {}
    seen: set[Path] = set()
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() in seen:
            continue  # the same run named twice (e.g. by overlapping globs) counts once
        seen.add(run_dir.resolve())
        config, summary = load_run(run_dir)
        groups.setdefault(_key(config), []).append((config, summary))
    configs = [runs[0][0] for runs in groups.values()]
    rows = []
    for runs in groups.values():
        config = runs[0][0]
        # label a configuration by what tells it from the others of its method and setting
        same_method = [c for c in configs if (c["method"], c["supervised"]) == (config["method"], config["supervised"])]
        differing = {
            f
            for f in set().union(*same_method) - _PER_RUN
            if len({json.dumps(c.get(f), sort_keys=True) for c in same_method}) > 1
        }
        figures = {name: [read(summary) for _, summary in runs] for name, (_, read) in COLUMNS.items()}
        rows.append(
            {
                "label": _label(config, differing),
                "seeds": sorted(c["seed"] for c, _ in runs),
                **{name: format_spread(spread(values)) for name, values in figures.items()},
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| configuration | seeds | " + " | ".join(header for header, _ in COLUMNS.values()) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    lines += [
        f"| {r['label']} | {','.join(map(str, r['seeds']))} | " + " | ".join(r[name] for name in COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcl-ssl summarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with config.json and summary.json)")
    args = parser.parse_args(argv)
    print(format_table(summarize(args.runs)))
    return 0
