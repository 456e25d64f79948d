"""A run directory's ``config.json``: the configuration a run trained with, the dataset it saw,
and the record of its resumes.

Layout of a run directory (written by :func:`tcl_ssl.train.pretrain`)::

    <run>/config.json        this record (see RunRecord)
    <run>/checkpoints/       last.ckpt (resumable)
    <run>/logs/version_N/metrics.csv
    <run>/summary.json       the final figures (see tcl_ssl.runs.summary)
    <run>/plots/             curves.png, tsne.png, confusion.png
    <run>/eval.json          written by ``tcl-ssl eval`` (see tcl_ssl.evaluation.eval_file)

``config.json`` files written before the configuration was grouped (flat option names, the
dataset under ``data``) are read as well. The ``run_dir`` written in the file is informative
only: a run directory may be copied or renamed, so :func:`read_record` returns the directory
it actually read, and every later write goes there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.runs.files import read_json, write_json

__all__ = [
    "FORMAT",
    "DatasetInfo",
    "RunRecord",
    "as_json",
    "check_writable",
    "read_record",
    "resolve_checkpoint",
    "run_dir_of",
]

FORMAT = "tcl-ssl-run"
#: version 2: the configuration grouped under ``config``; version 1 (no ``version``): flat
VERSION = 2


@dataclass(frozen=True)
class DatasetInfo:
    """What a run's dataset turned out to be once loaded.

    Attributes:
        train: images in the train split (before ``train_images`` took a subset).
        val: images in the validation split.
        test: images in the test split.
        classes: number of classes.
        channels: image channels (1 or 3).
        image_size: side of the images the backbone saw, in pixels.
        mean: per-channel mean of the train split, in ``[0, 1]`` units.
        std: per-channel standard deviation of the train split, in ``[0, 1]`` units.
        streamed: whether the images were streamed from their files (else held in memory).
    """

    train: int
    val: int
    test: int
    classes: int
    channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    streamed: bool = False


@dataclass(frozen=True)
class RunRecord:
    """The content of a run's ``config.json``.

    Attributes:
        config: the configuration, resolved (method defaults filled in, precision and stem as
            the run chose them).
        run_dir: the run directory (as read: the directory the file is in, not the one written in
            it; the configuration's ``out`` is set to it as well).
        dataset: the dataset as loaded.
        method_defaults: every option of the method with its default value.
        resumes: one entry per resume: ``at`` (ISO time), ``checkpoint``, and ``changed``
            (``{key: {"was": ..., "now": ...}}``).
    """

    config: PretrainConfig
    run_dir: Path
    dataset: DatasetInfo
    method_defaults: dict[str, Any] = field(default_factory=dict)
    resumes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON content of ``config.json``."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
            "method_defaults": self.method_defaults,
            "dataset": dataclasses.asdict(self.dataset),
            "resumes": self.resumes,
        }

    @classmethod
    def from_json(cls, content: dict[str, Any], where: str = "config.json") -> RunRecord:
        """A record from the content of ``config.json`` (either version).

        Raises:
            ValueError: naming ``where``, if the content is not a run's record.
        """
        if not isinstance(content, dict):
            raise ValueError(f"{where} is not a run's config.json (a JSON object)")
        for key in ("config", "dataset") if content.get("version") is not None else ("data",):
            if key in content and not isinstance(content[key], dict):
                raise ValueError(f"{where} is not a run's config.json: its {key!r} must be a JSON object")
        try:
            if content.get("version") is None:  # version 1: the options flat, the dataset under "data"
                # keys that are no longer options (written by early versions) are left out, as before
                known = set(PretrainConfig.options()) | {
                    a for i in PretrainConfig.options().values() for a in i.spec.aliases
                }
                options = {k: v for k, v in content.items() if k in known}
                config = PretrainConfig.from_dict(options, where)
                dataset, run_dir = content["data"], content.get("run_dir") or content["out"]
            else:
                config = PretrainConfig.from_dict(content["config"], where)
                dataset, run_dir = content["dataset"], content["run_dir"]
            return cls(
                config=config,
                run_dir=Path(run_dir),
                dataset=_dataset_info(dataset, where),
                method_defaults=dict(content.get("method_defaults") or {}),
                resumes=list(content.get("resumes") or []),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{where} is not a run's config.json ({type(error).__name__}: {error})") from None

    def write(self, path: Path | None = None) -> Path:
        """Write the record to ``path`` (default ``<run_dir>/config.json``) atomically."""
        return write_json(path or self.run_dir / "config.json", self.to_json())

    def with_resume(self, previous: RunRecord | None, checkpoint: str) -> RunRecord:
        """This record with the resumes of ``previous`` and one more entry for ``checkpoint``:
        when, from where, and each option that changed (``None`` without a previous record)."""
        changed = None
        if previous is not None:
            before, now = previous.config.flat(), self.config.flat()
            skip = {"resume", "out"}
            changed = {
                key: {"was": before.get(key), "now": value}
                for key, value in as_json(now).items()
                if key not in skip and as_json(before).get(key) != value
            }
        entry = {"at": datetime.now().isoformat(timespec="seconds"), "checkpoint": checkpoint, "changed": changed}
        history = [] if previous is None else previous.resumes
        return dataclasses.replace(self, resumes=[*history, entry])


def _dataset_info(content: dict[str, Any], where: str) -> DatasetInfo:
    """The ``dataset`` entry of ``config.json``, every field of the type :class:`DatasetInfo` declares.

    Raises:
        ValueError: naming ``where``, the field, its value and the type it must have.
    """
    info = DatasetInfo(**content)
    for item in dataclasses.fields(DatasetInfo):
        value = getattr(info, item.name)
        if item.name in ("mean", "std"):
            good = isinstance(value, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            )
            kind = "a list of numbers"
        elif item.name == "streamed":
            good, kind = isinstance(value, bool), "true or false"
        else:
            good, kind = isinstance(value, int) and not isinstance(value, bool) and value >= 0, "an integer >= 0"
        if not good:
            raise ValueError(f"{where} is not a run's config.json: dataset.{item.name} must be {kind}, got {value!r}")
    return info


def as_json(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as JSON reads them back (tuples become lists, keys texts): for comparing a
    configuration with one read from ``config.json``."""
    result: dict[str, Any] = json.loads(json.dumps(values))
    return result


def read_record(path: str | Path) -> RunRecord:
    """The record of a run: ``path`` is the run directory, its ``config.json``, or one of its
    checkpoints (``<run>/checkpoints/*.ckpt``).

    Raises:
        ValueError: if there is no readable ``config.json`` there, naming the path.
    """
    path = Path(path)
    if path.is_dir():
        file = path / "config.json"
    elif path.suffix == ".json":
        file = path
    else:
        file = run_dir_of(path) / "config.json"
    if not file.is_file():
        raise ValueError(f"no config.json for {str(path)!r} (looked for {file})")
    try:
        record = RunRecord.from_json(read_json(file), where=str(file))
    except ConfigError as error:
        raise ValueError(str(error)) from None
    # the directory read, not the one written in the file: the run may have been copied or moved
    return dataclasses.replace(record, run_dir=file.parent, config=record.config.replace(out=str(file.parent)))


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint file (``<run>/checkpoints/*.ckpt``) belongs to."""
    return Path(checkpoint).resolve().parent.parent


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file: ``path`` itself, or ``path/checkpoints/last.ckpt`` for a run directory.

    Raises:
        ValueError: if there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}: give a run directory or a .ckpt file of one")
    return path


def check_writable(directory: Path) -> None:
    """Raise ``ValueError`` unless ``directory`` exists as a writable directory or can be made."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the run directory {str(directory)!r}: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run directory {str(directory)!r}: {str(existing)!r} is not writable")
