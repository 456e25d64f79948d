"""A run's ``summary.json``: its final figures on the validation and test splits, typed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcl_ssl.runs.files import read_json, write_json

__all__ = ["OnlineProbe", "PeakMemory", "RunSummary", "read_summary"]


@dataclass(frozen=True)
class OnlineProbe:
    """The online linear probe (trained beside the method on detached features), top-1 in percent.

    Attributes:
        final_val_top1: at the end of training, on the validation split.
        final_test_top1: at the end of training, on the test split.
        best_val_top1: the best validation top-1 over the monitored epochs.
        best_epoch: that epoch (1-based).
    """

    final_val_top1: float | None = None
    final_test_top1: float | None = None
    best_val_top1: float | None = None
    best_epoch: int | None = None


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of the training process, in MiB.

    Attributes:
        host_rss_mib: resident set of the process.
        cuda_allocated_mib: the CUDA allocator's peak (``None`` off CUDA).
    """

    host_rss_mib: float | None = None
    cuda_allocated_mib: float | None = None


@dataclass(frozen=True)
class RunSummary:
    """The final figures of a run; top-1/top-5 in percent, times in seconds.

    Attributes:
        method: the method's registry name.
        supervised: whether labels were used.
        dataset: the dataset option.
        epochs: epochs trained.
        splits: images per split (``train``, ``val``, ``test``).
        val: figures on the validation split (``knn_top1``, ``linear_top1``, ...).
        test: the same on the test split.
        random_init: ``{"val": {...}, "test": {...}}`` of the backbone before training.
        online_probe: the online probe's figures.
        linear_weight_decay: the weight decay the linear probe chose on validation.
        train_seconds: the training loop's wall time.
        wall_seconds: data loading, training and evaluation.
        images_per_second: training images per second over all processes.
        peak_memory: peak memory while training.
        final_train_loss: the last epoch's mean training loss.
        metrics_csv: the last metrics file written.
        run_dir: the run directory (as read: the directory the file is in).
    """

    method: str
    supervised: bool
    dataset: str
    epochs: int
    val: dict[str, float]
    test: dict[str, float]
    random_init: dict[str, dict[str, float]]
    run_dir: str
    splits: dict[str, int] = field(default_factory=dict)
    online_probe: OnlineProbe = field(default_factory=OnlineProbe)
    linear_weight_decay: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    images_per_second: float | None = None
    peak_memory: PeakMemory = field(default_factory=PeakMemory)
    final_train_loss: float | None = None
    metrics_csv: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON content of ``summary.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, content: dict[str, Any], where: str = "summary.json") -> RunSummary:
        """A summary from the content of ``summary.json`` (older files lack the later fields).

        Raises:
            ValueError: naming ``where``, if the content lacks the figures.
        """
        if not isinstance(content, dict) or not {"val", "test", "random_init"} <= set(content):
            raise ValueError(
                f"{where} was written by an older tcl-ssl or is not a summary (no val/test figures); rerun it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in content.items() if k in names}
        values["online_probe"] = _known(OnlineProbe, content.get("online_probe"))
        values["peak_memory"] = _known(PeakMemory, content.get("peak_memory"))
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"{where} is not a run's summary ({error})") from None

    def write(self, path: Path | None = None) -> Path:
        """Write the summary to ``path`` (default ``<run_dir>/summary.json``) atomically."""
        return write_json(path or Path(self.run_dir) / "summary.json", self.to_json())

    def figures(self) -> dict[str, float | None]:
        """The figures a comparison tabulates, by name (``None`` where the run has none)."""
        return {
            "val_knn_top1": self.val.get("knn_top1"),
            "val_linear_top1": self.val.get("linear_top1"),
            "test_knn_top1": self.test.get("knn_top1"),
            "test_knn_top5": self.test.get("knn_top5"),
            "test_linear_top1": self.test.get("linear_top1"),
            "test_linear_top5": self.test.get("linear_top5"),
            "random_init_val_knn_top1": self.random_init.get("val", {}).get("knn_top1"),
            "random_init_val_linear_top1": self.random_init.get("val", {}).get("linear_top1"),
            "random_init_test_knn_top1": self.random_init.get("test", {}).get("knn_top1"),
            "random_init_test_linear_top1": self.random_init.get("test", {}).get("linear_top1"),
            "online_val_top1": self.online_probe.final_val_top1,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
            "images_per_second": self.images_per_second,
            "peak_rss_mib": self.peak_memory.host_rss_mib,
            "peak_cuda_mib": self.peak_memory.cuda_allocated_mib,
        }


def _known(cls: type[Any], content: Any) -> Any:
    """``cls`` from the entries of ``content`` that are its fields (others, of other versions, left out)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (content or {}).items() if k in names})


def read_summary(run_dir: str | Path) -> RunSummary:
    """The summary of a finished run directory.

    Raises:
        ValueError: if the run has no readable ``summary.json``, naming the path.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a finished run: missing {path}")
    summary = RunSummary.from_json(read_json(path), where=str(path))
    # the directory read, not the one written in the file: the run may have been copied or moved
    return dataclasses.replace(summary, run_dir=str(run_dir))
