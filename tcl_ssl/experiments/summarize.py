"""Summaries of finished runs: mean and spread over seeds of the figures in their ``summary.json``.

``tcl-ssl summarize RUN_DIR ...`` groups run directories by their configuration (every option
that can change the figures, but the seed) and prints one Markdown row per group: kNN and
linear-probe top-1 on the validation split (for choosing) and on the test split (for
reporting), the random-init backbone's validation and test figures, and the training time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcl_ssl.config import PretrainConfig
from tcl_ssl.experiments.tables import FIGURES, format_spread, spread
from tcl_ssl.runs import RunSummary, load_run

__all__ = ["COLUMNS", "format_table", "summarize"]

#: the columns of ``tcl-ssl summarize``'s table
COLUMNS = (
    "val_knn_top1",
    "val_linear_top1",
    "test_knn_top1",
    "test_linear_top1",
    "random_init_val_knn_top1",
    "random_init_val_linear_top1",
    "random_init_test_knn_top1",
    "random_init_test_linear_top1",
    "train_seconds",
)


def _identity(config: PretrainConfig) -> dict[str, Any]:
    """The options that make two runs one configuration: those that can change the figures, but
    the seed; as JSON values."""
    keys = [k for k, info in PretrainConfig.options().items() if info.spec.affects_results and k != "seed"]
    flat = config.flat()
    identity: dict[str, Any] = json.loads(json.dumps({key: flat[key] for key in keys}))
    return identity


def _label(config: PretrainConfig, differing: set[str]) -> str:
    """``method (setting)`` and the options that tell this configuration from the others."""
    method = config.method
    label = f"{method.name} ({'supervised' if method.supervised else 'self-supervised'})"
    extras = []
    for key in sorted(differing - {"method", "supervised"}):
        value = config.get(key)
        if isinstance(value, dict):
            extras += [f"{k}={v}" for k, v in sorted(value.items())]
        else:
            extras.append(f"{key}={value}")
    return label + (", " + ", ".join(extras) if extras else "")


def summarize(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per configuration: its label, seeds, and the mean/std of the runs' figures.

    Rows keep the order in which each configuration first appears in ``run_dirs``.

    Raises:
        ValueError: if a directory is not a finished run.
    """
    groups: dict[str, list[tuple[PretrainConfig, RunSummary]]] = {}
    seen: set[Path] = set()
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() in seen:
            continue  # the same run named twice (e.g. by overlapping globs) counts once
        seen.add(run_dir.resolve())
        record, summary = load_run(run_dir)
        config = record.config.replace(epochs=summary.epochs)  # a resumed run's epochs are its last
        groups.setdefault(json.dumps(_identity(config), sort_keys=True), []).append((config, summary))
    configs = [runs[0][0] for runs in groups.values()]
    rows = []
    for runs in groups.values():
        config = runs[0][0]
        # label a configuration by what tells it from the others of its method and setting
        same_method = [
            c for c in configs if (c.method.name, c.method.supervised) == (config.method.name, config.method.supervised)
        ]
        identities = [_identity(c) for c in same_method]
        differing = {k for k in identities[0] if len({json.dumps(i[k], sort_keys=True) for i in identities}) > 1}
        figures = {name: [summary.figures()[name] for _, summary in runs] for name in COLUMNS}
        rows.append(
            {
                "label": _label(config, differing),
                "seeds": sorted(c.run.seed for c, _ in runs),
                **{name: format_spread(spread(values)) for name, values in figures.items()},
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`summarize` as a Markdown table."""
    lines = [
        "| configuration | seeds | " + " | ".join(FIGURES[name] for name in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    lines += [
        f"| {r['label']} | {','.join(map(str, r['seeds']))} | " + " | ".join(r[name] for name in COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join(lines)
