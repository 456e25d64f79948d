"""Running many pretraining runs in order: each one new, resumed after an interruption, or reused
when its directory already holds the finished result. Shared by ``compare`` and ``sweep``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import ImageData
from tcl_ssl.preflight import check_run
from tcl_ssl.processes import is_process_zero
from tcl_ssl.runs import RunSummary, read_record, read_summary
from tcl_ssl.runs.reuse import check_same_configuration
from tcl_ssl.train import effective_data_source, load_run_data, pretrain

__all__ = [
    "PlannedRun",
    "Progress",
    "execute_runs",
    "parse_list",
    "run_state",
    "slug",
]

RunState = Literal["new", "interrupted", "finished"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison or sweep: the table row (``group``) it counts towards, its seed,
    and its configuration (``run.out`` is the run directory)."""

    group: str
    seed: int
    config: PretrainConfig

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir()


@dataclass(frozen=True)
class Progress:
    """Where a comparison stands, handed to its ``progress`` callback before and after each run.

    Attributes:
        index: the run's position, 1-based.
        total: the number of runs.
        run: the run.
        state: ``running`` (it starts), ``finished`` (it ended after ``seconds``) or ``reused``
            (its directory already held the result).
        elapsed: seconds since the first run started.
        seconds_left: the mean time of the runs finished by this call times the runs still to
            do (``None`` before one has finished).
        seconds: the run's own seconds, once finished.
        summary: the run's summary, once finished or reused.
    """

    index: int
    total: int
    run: PlannedRun
    state: str
    elapsed: float
    seconds_left: float | None
    seconds: float | None = None
    summary: RunSummary | None = None


def slug(text: str) -> str:
    """``text`` as a directory name: letters, digits, ``.``, ``-`` and ``_`` (others become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def parse_list(text: str, kind: Callable[[str], Any] = str, what: str = "list") -> list[Any]:
    """Comma-separated values, each converted by ``kind``.

    Raises:
        ValueError: naming the bad value, an empty list, or a value given twice.
    """
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


def run_state(run: PlannedRun) -> RunState:
    """``finished`` (summary.json written), ``interrupted`` (a checkpoint to resume) or ``new``.

    Raises:
        ValueError: if the directory holds a run of another configuration, naming each option
            that differs (options that cannot change the figures are not compared).
    """
    run_dir = run.run_dir
    if not (run_dir / "config.json").is_file():
        return "new"
    check_same_configuration(run_dir, read_record(run_dir).config, run.config)
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "interrupted"
    return "new"


def execute_runs(
    runs: Sequence[PlannedRun], progress: Callable[[Progress], None] | None = None, data: ImageData | None = None
) -> list[RunSummary | None]:
    """Run (or reuse, or resume) every planned run in order; their summaries in the same order
    (``None`` on processes other than 0 of a multi-process job).

    Each run's configuration is checked before the first starts. The dataset (``data``, or
    loaded from the configurations) is loaded once and shared by the runs that read the same
    images (all of a comparison's)."""
    states = {run.run_dir: run_state(run) for run in runs}
    for run in runs:
        if states[run.run_dir] == "new":
            check_run(run.config)
    began = time.perf_counter()
    durations: list[float] = []
    datasets: dict[str, ImageData] = {}
    summaries: list[RunSummary | None] = []

    def report(index: int, run: PlannedRun, state: str, seconds: float | None, summary: RunSummary | None) -> None:
        later = runs[index:] if state != "running" else runs[index - 1 :]
        remaining = sum(states[r.run_dir] != "finished" for r in later)
        left = sum(durations) / len(durations) * remaining if durations else None
        if progress is not None and is_process_zero():
            progress(Progress(index, len(runs), run, state, time.perf_counter() - began, left, seconds, summary))

    for index, run in enumerate(runs, start=1):
        if states[run.run_dir] == "finished":
            summary = read_summary(run.run_dir)
            summaries.append(summary)
            report(index, run, "reused", None, summary)
            continue
        report(index, run, "running", None, None)
        start = time.perf_counter()
        config = run.config
        if states[run.run_dir] == "interrupted":
            config = config.replace(resume=str(run.run_dir))
        # the images a run reads; train_images is not among them: pretrain takes its subset itself
        images = {k: v for k, v in config.to_dict()["data"].items() if k != "train_images"}
        key = json.dumps(
            images | {"data_source": effective_data_source(config), "workers": config.trainer.workers}, sort_keys=True
        )
        if data is None and key not in datasets:
            datasets.clear()  # one dataset in memory at a time
            datasets[key] = load_run_data(config.resolved())
        result = pretrain(config, data=data if data is not None else datasets[key])
        durations.append(time.perf_counter() - start)
        summaries.append(result)
        report(index, run, "finished", durations[-1], result)
    return summaries
