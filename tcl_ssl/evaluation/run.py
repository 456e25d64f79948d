"""The evaluation suite on the backbone of a finished run (``tcl-ssl eval RUN``).

:func:`evaluate_run` rebuilds the backbone of any method's run from its ``config.json`` and checkpoint, loads the
run's dataset (or, with ``--dataset``, another one, resized to the run's image size: transfer),
runs the chosen protocols on the validation and test splits, and adds the result
to ``<run>/eval.json`` (one entry per weights and dataset, see :mod:`tcl_ssl.evaluation.eval_file`)
and the pictures to ``<run>/plots/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tcl_ssl.data import ImageData, dataset_identity, load_dataset
from tcl_ssl.evaluation.eval_file import add_entry, entry_key, read_eval_file, weights_digest
from tcl_ssl.evaluation.plots import write_run_plots
from tcl_ssl.evaluation.suite import EvalSettings, check_protocols, evaluate_backbone
from tcl_ssl.export import backbone_from_run
from tcl_ssl.runs import RunRecord, read_record, resolve_checkpoint, run_dir_of, write_json
from tcl_ssl.safe_io import check_archive, save_torch

__all__ = ["eval_settings", "evaluate_run", "read_features", "write_features"]


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def eval_settings(
    run: str | Path, knn_k: int | None = None, knn_temperature: float | None = None, **options: Any
) -> EvalSettings:
    """Evaluation settings whose kNN options default to those the run (directory or checkpoint)
    trained with; ``options`` are the other :class:`~tcl_ssl.evaluation.EvalSettings` fields."""
    evaluation = read_record(resolve_checkpoint(run)).config.eval
    return EvalSettings(
        knn_k=evaluation.knn_k if knn_k is None else knn_k,
        knn_temperature=evaluation.knn_temperature if knn_temperature is None else knn_temperature,
        **options,
    )


def evaluate_run(
    run: str | Path,
    protocols: Sequence[str] = ("knn", "linear"),
    dataset: str | None = None,
    *,
    data: ImageData | None = None,
    data_dir: str | None = None,
    settings: EvalSettings | None = None,
    accelerator: str = "auto",
    plots: bool = True,
    save_features: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the backbone of ``run`` (directory or checkpoint) and return the entry written to
    ``eval.json``: ``dataset``, ``weights_sha256``, ``step``, ``checkpoint``, ``protocols``, ``val``, ``test``, ... .

    ``dataset`` (default: the run's) that names the run's own dataset, in any spelling, is loaded
    with the run's splits; another one (transfer) with its default splits, resized to the run's
    image size. ``save_features`` writes the backbone's features and labels of each split there
    (:func:`write_features`). An earlier entry for the same dataset and weights (SHA-256 of the
    backbone's state) keeps the figures of the protocols not run again; figures of other weights
    are never merged.

    Raises:
        ValueError: naming the file, for a damaged ``config.json`` or ``eval.json`` (before any work).
    """
    protocols = check_protocols(list(protocols))
    checkpoint = resolve_checkpoint(run)
    run_dir = run_dir_of(checkpoint)
    eval_path = run_dir / "eval.json"
    read_eval_file(eval_path)  # a damaged eval.json is named before the work, not after
    backbone, feature_dim, record, step = backbone_from_run(checkpoint)
    weights = weights_digest(backbone)
    own = record.config.data
    transfer = dataset is not None and dataset_identity(dataset) != dataset_identity(own.dataset)
    name = dataset if transfer and dataset is not None else own.dataset
    if data is None:
        data = _load_data(record, name, transfer, data_dir)
    if data.channels != record.dataset.channels:
        data = data.with_channels(record.dataset.channels)
    if settings is None:
        settings = eval_settings(checkpoint)
    device = _device(accelerator)
    start = time.perf_counter()
    evaluation = evaluate_backbone(backbone.to(device), feature_dim, data, protocols, settings, device, accelerator)
    entry = {
        "dataset": name,
        "weights_sha256": weights,
        "step": step,
        "checkpoint": str(checkpoint),
        "method": record.config.method.name,
        "protocols": list(protocols),
        "splits": data.sizes(),
        "val": evaluation.metrics["val"],
        "test": evaluation.metrics["test"],
        "linear_weight_decay": evaluation.linear_weight_decay,
        "seconds": time.perf_counter() - start,
    }
    if save_features is not None:
        labels = {split: data.split(split).labels for split in evaluation.raw_features}
        write_features(save_features, evaluation.raw_features, labels)
    content = add_entry(read_eval_file(eval_path), entry)
    write_json(eval_path, content)
    entry = content["entries"][entry_key(name, weights)]
    if plots:
        suffix = "" if not transfer else "-" + "".join(c if c.isalnum() else "_" for c in name).strip("_")
        curves = sorted(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
        title = f"{record.config.method.name} on {name}"
        write_run_plots(run_dir / f"plots{suffix}", evaluation, data, [] if transfer else curves, title=title)
    return entry


def _load_data(record: RunRecord, name: str, transfer: bool, data_dir: str | None) -> ImageData:
    """The run's dataset with its splits; or, for transfer, ``name`` with its default splits at
    the run's image size."""
    own = record.config.data
    directory = data_dir or own.data_dir
    return load_dataset(
        name,
        data_dir=Path(directory) if directory else None,
        image_size=record.dataset.image_size if transfer else own.image_size,
        val_fraction=None if transfer else own.val_fraction,
        test_fraction=None if transfer else own.test_fraction,
        skip_bad_images=own.skip_bad_images,
        decode_size=None if transfer else own.decode_size,
        workers=record.config.trainer.workers,
    )


def write_features(path: str | Path, features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
    """Save ``{split: {"features": (N, F) float32, "labels": (N,) int64}}`` with ``torch.save``,
    atomically (:func:`tcl_ssl.safe_io.save_torch`)."""
    save_torch({name: {"features": features[name].cpu(), "labels": labels[name].cpu()} for name in features}, path)


def read_features(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits written by :func:`write_features`: ``{split: (features, labels)}``; a damaged
    file raises :class:`~tcl_ssl.safe_io.DamagedFileError` naming it."""
    check_archive(path, advice="write it again with tcl-ssl eval --save-features")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    missing = [name for name in ("train", "val", "test") if name not in saved]
    if missing:
        raise ValueError(
            f"{path} lacks the splits {missing}; expected a file written by `tcl-ssl eval --save-features`"
        )
    return {name: (split["features"], split["labels"]) for name, split in saved.items()}
