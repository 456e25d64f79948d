"""Many pretraining runs under one budget -> a results table and plots.

``tcl-ssl compare`` runs a list of methods x a list of seeds (:func:`plan_comparison`), every
run with the same budget (dataset and splits, backbone, epochs, batch size, evaluation), each
method with its own recipe (its published defaults, or a recipe file per method), and writes::

    <out>/runs/<method>-seed<k>/   one run directory per run (see tcl_ssl.train)
    <out>/results.md               the table: mean ± sample std over seeds, and the budget
    <out>/results.csv              the same figures, one row per method (mean and std columns)
    <out>/results.json             the budget, each method's settings, every run's figures
    <out>/plots/curves.png         validation kNN / online-probe top-1 per epoch (mean, band over seeds)
    <out>/plots/bars.png           test kNN and linear top-1 per method, error bars over seeds

Finished runs are reused when the command is run again and interrupted ones resume from their
last checkpoint, so an interrupted comparison continues where it stopped; a run directory that
holds a different configuration is refused rather than mixed in. :func:`execute_runs` and
:func:`collect` are shared with ``tcl-ssl sweep`` (:mod:`tcl_ssl.sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcl_ssl.data import ImageData
from tcl_ssl.evaluation.plots import metrics_files, read_epoch_metrics
from tcl_ssl.results import FIGURES, format_spread, load_run, read_figures, spread
from tcl_ssl.train import PretrainConfig, effective_data_source, load_run_data, pretrain

log = logging.getLogger(__name__)

#: the methods compared by default, self-supervised and supervised
SELF_SUPERVISED_METHODS = ("tcl", "simclr", "moco", "moco-tcl", "byol")
SUPERVISED_METHODS = ("tcl", "supcon", "ce")

#: PretrainConfig fields that make up a comparison's budget: every method runs with the same values
BUDGET_FIELDS = (
    "dataset",
    "data_dir",
    "image_size",
    "decode_size",
    "val_fraction",
    "test_fraction",
    "train_images",
    "skip_bad_images",
    "backbone",
    "stem",
    "epochs",
    "batch_size",
    "supervised",
    "precision",
    "accelerator",
    "devices",
    "num_nodes",
    "knn_k",
    "knn_temperature",
    "knn_every_n_epochs",
    "eval_protocols",
    "linear_aug_epochs",
    "linear_aug_lr",
    "limit_train_batches",
)

#: config.json fields that may differ between a planned run and the run directory it reuses
_NOT_COMPARED = {"out", "resume", "recipe", "plots", "logger", "workers", "data_source", "checkpoint_every_n_steps"}

#: fields that a run resolves when it starts where they are None (the run's value then stands)
_RESOLVED_AT_START = {"precision", "stem"}

#: the figures of the results table, in its column order
TABLE_FIGURES = (
    "test_knn_top1",
    "test_knn_top5",
    "test_linear_top1",
    "test_linear_top5",
    "val_knn_top1",
    "val_linear_top1",
    "random_init_test_knn_top1",
    "train_seconds",
    "wall_seconds",
    "images_per_second",
    "peak_rss_mib",
)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison or sweep: the table row (``group``) it counts towards, its seed,
    and its configuration (``out`` is the run directory)."""

    group: str
    seed: int
    config: PretrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)


@dataclass
class Progress:
    """Where a comparison stands, handed to its ``progress`` callback before and after each run.

    ``state``: ``running`` (``run`` starts), ``finished`` (it ended after ``seconds``) or
    ``reused`` (its directory already held the result). ``seconds_left``: the mean time of the
    runs finished by this call times the runs still to do (``None`` before one has finished)."""

    index: int  # 1-based
    total: int
    run: PlannedRun
    state: str
    elapsed: float
    seconds_left: float | None
    seconds: float | None = None
    summary: dict[str, Any] | None = None


@dataclass
class GroupResult:
    """The runs of one table row over seeds: their figures, mean ± std, and validation curves."""

    group: str
    settings: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"seed", "run_dir", "figures"}
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # figure -> {"mean", "std", "n"}
    curves: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)  # metric -> per run [(epoch, value)]


def is_global_zero() -> bool:
    """Whether this is process 0 of a multi-process (DDP) job, or the only process. Under DDP
    every process runs the same sequence of runs (each pretrain is a collective); only process 0
    reports progress and writes the results."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def slug(text: str) -> str:
    """``text`` as a directory name: letters, digits, ``.``, ``-`` and ``_`` (others become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def parse_list(text: str, kind: Callable[[str], Any] = str, what: str = "list") -> list[Any]:
    """Comma-separated values, each converted by ``kind``; raises ``ValueError`` naming the bad one."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            values.append(kind(item))
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not a valid {getattr(kind, '__name__', 'value')}") from None
    if not values:
        raise ValueError(f"{what} is empty: give comma-separated values, e.g. 0,1,2")
    if len(set(map(str, values))) != len(values):
        raise ValueError(f"{what} names a value twice: {text!r}")
    return values


def check_budget(configs: dict[str, PretrainConfig]) -> dict[str, Any]:
    """The budget the configurations share (their :data:`BUDGET_FIELDS`); raises ``ValueError``
    naming the field and the groups where they differ."""
    budget: dict[str, Any] = {}
    first_group = next(iter(configs))
    for name in BUDGET_FIELDS:
        values = {group: getattr(config, name) for group, config in configs.items()}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            listed = ", ".join(f"{group}: {value!r}" for group, value in values.items())
            raise ValueError(f"the runs of a comparison must share one budget, but {name} differs ({listed})")
        budget[name] = values[first_group]
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
        PlannedRun(
            group, seed, dataclasses.replace(config, seed=seed, out=str(out / "runs" / f"{slug(group)}-seed{seed}"))
        )
        for seed in seeds
        for group, config in configs.items()
    ]


def run_state(run: PlannedRun) -> str:
    """``finished`` (summary.json written), ``interrupted`` (a checkpoint to resume) or ``new``;
    raises ``ValueError`` if the directory holds a run of another configuration."""
    run_dir = run.run_dir
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        return "new"
    held = json.loads(config_file.read_text())
    planned = json.loads(json.dumps(dataclasses.asdict(run.config.resolved())))
    changed = sorted(
        k
        for k in planned
        if k not in _NOT_COMPARED and held.get(k) != planned[k] and not (k in _RESOLVED_AT_START and planned[k] is None)
    )
    if changed:
        details = ", ".join(f"{k}: {held.get(k)!r} there, {planned[k]!r} planned" for k in changed)
        raise ValueError(
            f"{run_dir} holds a run of another configuration ({details}); give another --out, or remove it"
        )
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "interrupted"
    return "new"


def execute_runs(
    runs: Sequence[PlannedRun], progress: Callable[[Progress], None] | None = None, data: ImageData | None = None
) -> list[dict[str, Any]]:
    """Run (or reuse, or resume) every planned run in order; their summaries in the same order.

    Each run's configuration is validated before the first starts. The dataset (``data``, or
    loaded from the configurations) is loaded once and shared by the runs that share its fields
    (all of a comparison's)."""
    states = {run.run_dir: run_state(run) for run in runs}
    for run in runs:
        if states[run.run_dir] == "new":
            run.config.validate()
    began = time.perf_counter()
    durations: list[float] = []
    datasets: dict[str, Any] = {}
    summaries = []
    for index, run in enumerate(runs, start=1):

        def report(
            state: str,
            seconds: float | None = None,
            summary: dict | None = None,
            index: int = index,
            run: PlannedRun = run,
        ) -> None:
            later = runs[index:] if state != "running" else runs[index - 1 :]
            remaining = sum(states[r.run_dir] != "finished" for r in later)
            left = sum(durations) / len(durations) * remaining if durations else None
            if progress is not None and is_global_zero():
                progress(Progress(index, len(runs), run, state, time.perf_counter() - began, left, seconds, summary))

        if states[run.run_dir] == "finished":
            _, summary = load_run(run.run_dir)
            summaries.append(summary)
            report("reused", summary=summary)
            continue
        report("running")
        start = time.perf_counter()
        config = run.config
        if states[run.run_dir] == "interrupted":
            config = dataclasses.replace(config, resume=str(run.run_dir))
        key = json.dumps(
            {name: getattr(config, name) for name in _DATA_KEY} | {"data_source": effective_data_source(config)},
            sort_keys=True,
        )
        if data is None and key not in datasets:
            datasets.clear()  # one dataset in memory at a time
            datasets[key] = load_run_data(config.resolved())
        summary = pretrain(config, data=data if data is not None else datasets[key])
        durations.append(time.perf_counter() - start)
        summaries.append(summary)
        report("finished", durations[-1], summary)
    return summaries


#: the fields that decide which images a run loads
_DATA_KEY = (
    "dataset",
    "data_dir",
    "image_size",
    "decode_size",
    "val_fraction",
    "test_fraction",
    "skip_bad_images",
    "data_source",
    "workers",
)


def run_settings(config: PretrainConfig) -> dict[str, Any]:
    """What a method's runs were trained with, beyond the budget: its resolved recipe."""
    from tcl_ssl.methods import method_class

    resolved = config.resolved()
    options = method_class(resolved.method).resolved_options(resolved.supervised) | resolved.method_options
    return {
        "method": resolved.method,
        "augmentation": resolved.augmentation,
        "augmentation_options": resolved.augmentation_options,
        "num_views": resolved.num_views,
        "optimizer": resolved.optimizer,
        "lr": resolved.lr,
        "weight_decay": resolved.weight_decay,
        "warmup_epochs": resolved.warmup_epochs,
        "method_options": options,
        "recipe": resolved.recipe,
    }


def collect(runs: Sequence[PlannedRun], summaries: Sequence[dict[str, Any]]) -> list[GroupResult]:
    """The runs' figures grouped by ``group`` (in plan order), with mean ± std over seeds."""
    results: dict[str, GroupResult] = {}
    for run, summary in zip(runs, summaries):
        result = results.setdefault(run.group, GroupResult(run.group, run_settings(run.config)))
        result.runs.append({"seed": run.seed, "run_dir": str(run.run_dir), "figures": read_figures(summary)})
        for metric, points in read_epoch_metrics(metrics_files(run.run_dir)).items():
            result.curves.setdefault(metric, []).append(points)
    for result in results.values():
        result.stats = {name: spread([r["figures"][name] for r in result.runs]) for name in FIGURES}
    return list(results.values())


def settings_text(settings: dict[str, Any]) -> str:
    """A short description of a method's settings for a table cell."""
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


#: figures shown without decimals
_WHOLE_NUMBERS = ("images_per_second", "peak_rss_mib", "peak_cuda_mib", "train_seconds", "wall_seconds")


def format_results(
    results: Sequence[GroupResult], figures: Sequence[str] = TABLE_FIGURES, mark: str | None = None
) -> str:
    """A Markdown table: one row per group, ``mean ± std`` over its seeds per figure; ``mark`` is starred."""
    header = "| | seeds | " + " | ".join(FIGURES[name][0] for name in figures) + " | settings |"
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
    """``results.md``, ``results.csv`` and ``results.json`` in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"results.{name}" for name in ("md", "csv", "json")}
    payload = header | {"groups": [dataclasses.asdict(r) for r in results]}
    paths["json"].write_text(json.dumps(payload, indent=2))
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "seeds"] + [f"{name}_{part}" for name in FIGURES for part in ("mean", "std")])
        for r in results:
            row = [r.group, " ".join(str(run["seed"]) for run in r.runs)]
            row += [
                ("" if r.stats[name][part] is None else f"{r.stats[name][part]:.4f}")
                for name in FIGURES
                for part in ("mean", "std")
            ]
            writer.writerow(row)
    budget = "\n".join(f"- {name}: `{value}`" for name, value in header.get("budget", {}).items())
    command = header.get("command")
    paths["md"].write_text(
        f"# {title}\n\n"
        + (f"Command: `{command}`\n\n" if command else "")
        + "Figures: mean ± sample standard deviation over seeds; top-1/top-5 in percent. Nothing was chosen "
        "on the test split. Times of a run resumed after an interruption count its last part only.\n\n"
        + (table or format_results(results))
        + "\n\n"
        + (extra_markdown + "\n\n" if extra_markdown else "")
        + ("Budget (equal for every row):\n\n" + budget + "\n" if budget else "")
    )
    return paths


def compare(
    configs: dict[str, PretrainConfig],
    seeds: Sequence[int],
    out: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    plots: bool = True,
    data: ImageData | None = None,
) -> list[GroupResult]:
    """Run every method's configuration (``{method: config}``, equal budget) with every seed in
    ``out``, reusing finished runs; write the results files and plots; return the results.
    ``data``: the dataset every run uses (default: loaded from the configurations)."""
    budget = check_budget({group: config.resolved() for group, config in configs.items()})
    runs = plan_comparison(configs, seeds, out)
    summaries = execute_runs(runs, progress, data)
    if not is_global_zero():  # the other processes of a DDP job: their pretrain returned no summary
        return []
    results = collect(runs, summaries)
    setting = "supervised" if budget["supervised"] else "self-supervised"
    header = {"kind": "compare", "command": command, "seeds": list(seeds), "budget": budget}
    write_results(out, results, header, f"Comparison, {setting}, {len(seeds)} seed(s)")
    if plots:
        from tcl_ssl.comparison_plots import plot_bars, plot_curves

        plot_curves(results, out / "plots" / "curves.png")
        plot_bars(results, out / "plots" / "bars.png")
    return results
