"""Run directories: ``config.json`` (:mod:`~tcl_ssl.runs.record`), ``summary.json``
(:mod:`~tcl_ssl.runs.summary`) and atomic file writes (:mod:`~tcl_ssl.runs.files`)."""

from pathlib import Path

from tcl_ssl.runs.files import write_json, write_text
from tcl_ssl.runs.record import (
    DatasetInfo,
    RunRecord,
    check_writable,
    read_record,
    resolve_checkpoint,
    run_dir_of,
)
from tcl_ssl.runs.summary import OnlineProbe, PeakMemory, RunSummary, read_summary

__all__ = [
    "DatasetInfo",
    "OnlineProbe",
    "PeakMemory",
    "RunRecord",
    "RunSummary",
    "check_writable",
    "load_run",
    "read_record",
    "read_summary",
    "resolve_checkpoint",
    "run_dir_of",
    "write_json",
    "write_text",
]


def load_run(run_dir: str | Path) -> tuple[RunRecord, RunSummary]:
    """The record and summary of a finished run directory.

    Raises:
        ValueError: if either file is missing or unreadable.
    """
    missing = [
        str(Path(run_dir) / name) for name in ("config.json", "summary.json") if not (Path(run_dir) / name).is_file()
    ]
    if missing:
        raise ValueError(f"{run_dir} is not a finished run: missing {', '.join(missing)}")
    return read_record(run_dir), read_summary(run_dir)
