"""One method's tuning search on validation: the lr, then each of its key knobs in turn (``tcl-ssl tune``).

A coordinate search: the first step runs the lr at ``lr_factors`` times the method's lr (its
recipe's, else its published default); each later step varies one knob of the method's
:attr:`~tcl_ssl.methods.Method.search_space` over its candidate values, the other settings at
the values chosen so far, and keeps the value with the best mean validation figure (ties keep
the value it had). A setting already run in an earlier step is reused, not run again, and so
are finished runs in ``<out>`` when the command is run again (interrupted ones resume).

``<out>`` receives ``results.md`` / ``.csv`` / ``.json`` (every setting tried, the chosen one
starred, the steps and their choices) and ``runs/``; with ``recipe``, a recipe file (YAML) of
the chosen settings that ``tcl-ssl pretrain --config`` and ``tcl-ssl compare --recipes`` read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tcl_ssl.config import PretrainConfig
from tcl_ssl.config.recipes import RECIPE_DIR
from tcl_ssl.data import ImageData
from tcl_ssl.experiments.runner import PlannedRun, Progress, execute_runs, slug
from tcl_ssl.experiments.sweep import SELECTABLE, SWEEP_FIGURES, cell_config, cell_label
from tcl_ssl.experiments.tables import FIGURES, GroupResult, collect, format_results, format_spread, write_results
from tcl_ssl.methods import method_class
from tcl_ssl.processes import is_process_zero, share_from_process_zero
from tcl_ssl.runs import RunSummary, write_text

__all__ = ["LR_FACTORS", "TuneStep", "search_steps", "starting_point", "tune", "recipe_text"]

#: the lr of the first step, relative to the method's
LR_FACTORS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class TuneStep:
    """One step of the search: the knob varied, the values run, each one's mean validation
    figure (``None`` where no run reported it) and the value kept."""

    axis: str
    values: tuple[Any, ...]
    scores: tuple[float | None, ...]
    chosen: Any


def starting_point(base: PretrainConfig) -> dict[str, Any]:
    """The settings the search starts from: ``base``'s lr and the value ``base`` trains with of
    every knob in the method's search space (its own option, else the method's default)."""
    resolved = base.resolved()
    cls = method_class(base.method.name)
    defaults = cls.resolved_options(base.method.supervised) | dict(base.method.options)
    return {"lr": resolved.get("lr")} | {knob: defaults[knob] for knob in cls.search_space}


def search_steps(base: PretrainConfig, lr_factors: Sequence[float] = LR_FACTORS) -> list[tuple[str, list[Any]]]:
    """The steps, in order: ``("lr", values)`` then ``(knob, values)`` for each knob of the search
    space; each step's values include the starting value.

    Raises:
        ValueError: for no lr factor or one that is not > 0.
    """
    if not lr_factors or any(not f > 0 for f in lr_factors):
        raise ValueError(f"lr factors must be numbers > 0, got {list(lr_factors)}")
    start = starting_point(base)
    lr = float(start["lr"])
    steps: list[tuple[str, list[Any]]] = [("lr", _with(start["lr"], [round(lr * f, 10) for f in lr_factors]))]
    for knob, values in method_class(base.method.name).search_space.items():
        steps.append((knob, _with(start[knob], list(values))))
    return steps


def _with(value: Any, values: list[Any]) -> list[Any]:
    return values if value in values else [*values, value]


def tune(
    base: PretrainConfig,
    out: Path,
    *,
    seeds: Sequence[int] = (100,),
    metric: str = "val_knn_top1",
    lr_factors: Sequence[float] = LR_FACTORS,
    recipe: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    data: ImageData | None = None,
) -> tuple[dict[str, Any], list[TuneStep]] | None:
    """Run the search from ``base`` in ``out``; write its results (and ``recipe``).

    Args:
        base: the budget and the method's starting recipe.
        out: the search directory.
        seeds: each setting runs every seed; choices use the mean.
        metric: the validation figure that chooses (one of ``SELECTABLE``).
        lr_factors: the first step's lr, relative to ``base``'s.
        recipe: where to write the chosen settings as a recipe file (``None``: nowhere).
        progress: called before and after each run.
        command: the command line, recorded in the results.
        data: the loaded data of the budget (loaded once per run otherwise).

    Returns:
        ``(chosen settings, steps)``, or ``None`` on processes other than 0 of a multi-process job.

    Raises:
        ValueError: for a metric that is not a validation figure, or no seed.
    """
    if metric not in SELECTABLE:
        raise ValueError(f"select on a validation figure: one of {', '.join(SELECTABLE)}, got {metric!r}")
    if not seeds:
        raise ValueError("give at least one seed")
    current = starting_point(base)
    steps: list[TuneStep] = []
    planned: dict[str, list[PlannedRun]] = {}  # each setting's runs, by label
    summaries: dict[Path, RunSummary | None] = {}  # each run's summary, by run directory
    for axis, values in search_steps(base, lr_factors):
        cells = [current | {axis: value} for value in values]
        step = [
            run
            for cell in cells
            for run in planned.setdefault(cell_label(cell), [_planned(base, cell, seed, out) for seed in seeds])
        ]
        summaries.update(zip((run.run_dir for run in step), execute_runs(step, progress, data)))
        chosen = None
        if is_process_zero():  # the only process with the runs' summaries
            results = {r.group: r for r in collect(step, [summaries[run.run_dir] for run in step])}
            scores = tuple(_score(results.get(cell_label(cell)), metric) for cell in cells)
            chosen = _choose(values, scores, current[axis])
            steps.append(TuneStep(axis, tuple(values), scores, chosen))
        # every process runs the next step with process 0's choice
        current = current | {axis: share_from_process_zero(chosen)}
    if not is_process_zero():
        return None
    runs = [run for setting in planned.values() for run in setting]
    all_results = collect(runs, [summaries[run.run_dir] for run in runs])
    _write(base, out, current, steps, all_results, seeds, metric, command, recipe)
    return current, steps


def _planned(base: PretrainConfig, cell: dict[str, Any], seed: int, out: Path) -> PlannedRun:
    label = cell_label(cell)
    return PlannedRun(
        label, seed, cell_config(base, cell).replace(seed=seed, out=str(out / "runs" / f"{slug(label)}-seed{seed}"))
    )


def _score(result: GroupResult | None, metric: str) -> float | None:
    return None if result is None else result.stats[metric]["mean"]


def _choose(values: Sequence[Any], scores: Sequence[float | None], current: Any) -> Any:
    """The value with the best score; the current value among equals; the current one when none scored."""
    scored = [(score, value) for value, score in zip(values, scores) if score is not None]
    if not scored:
        return current
    best = max(score for score, _ in scored)
    winners = [value for score, value in scored if score == best]
    return current if current in winners else winners[0]


def recipe_text(base: PretrainConfig, chosen: dict[str, Any], description: str) -> str:
    """A recipe file (YAML) of the search's result: it extends the recipe ``base`` came from (if
    any), sets the budget ``base`` ran with (the dataset left to the command line), the method,
    its options with the chosen values, and the chosen lr."""
    resolved = base.resolved()
    content: dict[str, Any] = {"description": description}
    if resolved.run.recipe is not None:
        path = Path(resolved.run.recipe)
        content["extends"] = path.stem if path.parent == RECIPE_DIR else str(path)
    content["requires"] = ["dataset"]
    for key in PretrainConfig.budget_keys():
        value = resolved.get(key)
        if key not in ("dataset", "data_dir", "supervised") and value is not None:
            content[key] = value
    options = {knob: value for knob, value in chosen.items() if knob != "lr"}
    content["method"] = {
        "name": base.method.name,
        "supervised": base.method.supervised,
        "options": dict(base.method.options) | options,
    }
    content["optim"] = {"lr": chosen["lr"]}
    text: str = yaml.safe_dump(content, sort_keys=False, width=100)
    return text


def _write(
    base: PretrainConfig,
    out: Path,
    chosen: dict[str, Any],
    steps: list[TuneStep],
    results: list[GroupResult],
    seeds: Sequence[int],
    metric: str,
    command: str | None,
    recipe: Path | None,
) -> None:
    label = cell_label(chosen)
    best = next(r for r in results if r.group == label)
    lines = ["| step | knob | values (mean " + FIGURES[metric] + ") | kept |", "|---:|---|---|---|"]
    for number, step in enumerate(steps, 1):
        cells = "; ".join(
            f"{value}: {'-' if score is None else f'{score:.2f}'}" for value, score in zip(step.values, step.scores)
        )
        lines.append(f"| {number} | {step.axis} | {cells} | {step.chosen} |")
    text = (
        f"Chosen on {FIGURES[metric]}: **{label}** (its test figures: kNN "
        f"{format_spread(best.stats['test_knn_top1'], 2)}, linear {format_spread(best.stats['test_linear_top1'], 2)}).\n\n"
        + "\n".join(lines)
    )
    resolved = base.resolved()
    header = {
        "kind": "tune",
        "command": command,
        "method": base.method.name,
        "seeds": list(seeds),
        "selected_on": metric,
        "selected": chosen,
        "steps": [
            {"axis": s.axis, "values": list(s.values), "scores": list(s.scores), "chosen": s.chosen} for s in steps
        ],
        "budget": {key: resolved.get(key) for key in PretrainConfig.budget_keys()},
    }
    setting = "supervised" if base.method.supervised else "self-supervised"
    write_results(
        out,
        results,
        header,
        f"Tuning search of {base.method.name} ({setting}), {len(seeds)} seed(s)",
        table=format_results(results, SWEEP_FIGURES, mark=label),
        extra_markdown=text,
    )
    if recipe is not None:
        description = (
            f"{base.method.name} tuned by `tcl-ssl tune` on {FIGURES[metric]} (seeds {', '.join(map(str, seeds))}): "
            f"{label}."
        )
        write_text(recipe, recipe_text(base, chosen, description))
