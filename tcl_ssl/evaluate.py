"""``tcl-ssl eval RUN_DIR_OR_CHECKPOINT``: the evaluation suite on a trained backbone.

Rebuilds the backbone of any method's run from its ``config.json`` and checkpoint, loads the
run's dataset (or, with ``--dataset``, another one, resized to the run's image size: transfer),
runs the chosen protocols on the validation and test splits, prints a table and adds the result
to ``<run>/eval.json`` (one entry per dataset) and the pictures to ``<run>/plots/``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tcl_ssl.data import ImageData, load_dataset
from tcl_ssl.evaluation import EvalSettings, evaluate_backbone
from tcl_ssl.evaluation.plots import write_run_plots
from tcl_ssl.evaluation.suite import PROTOCOLS, check_protocols
from tcl_ssl.export import backbone_from_run, resolve_checkpoint, run_config


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def dataset_identity(spec: str) -> str:
    """What a dataset spec refers to: the resolved path of an image folder, else the lower-case
    name (``folder:`` and ``torchvision:`` prefixes dropped, aliases mapped to class names)."""
    from tcl_ssl.data.sources import _TORCHVISION_ALIASES

    bare = spec.removeprefix("folder:").removeprefix("torchvision:")
    if spec.startswith("folder:") or Path(bare).expanduser().is_dir():
        return str(Path(bare).expanduser().resolve())
    return _TORCHVISION_ALIASES.get(bare.lower(), bare).lower()


def run_settings(
    config: dict[str, Any], knn_k: int | None = None, knn_temperature: float | None = None, **options
) -> EvalSettings:
    """Evaluation settings whose kNN options default to the run's own (``config.json``)."""
    return EvalSettings(
        knn_k=config.get("knn_k", 200) if knn_k is None else knn_k,
        knn_temperature=config.get("knn_temperature", 0.1) if knn_temperature is None else knn_temperature,
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
    ``eval.json``: ``dataset``, ``checkpoint``, ``protocols``, ``val``, ``test``, ... .

    ``dataset`` (default: the run's) that names the run's own dataset, in any spelling, is loaded
    with the run's splits; another one (transfer) with its default splits, resized to the run's
    image size. ``save_features`` writes the backbone's features and labels of each split there
    (:func:`write_features`). An earlier entry for the same dataset and checkpoint keeps the
    figures of the protocols not run again."""
    protocols = check_protocols(list(protocols))
    checkpoint = resolve_checkpoint(run)
    backbone, feature_dim, config = backbone_from_run(checkpoint)
    run_dir = checkpoint.resolve().parent.parent
    transfer = dataset is not None and dataset_identity(dataset) != dataset_identity(config["dataset"])
    name = dataset if transfer else config["dataset"]
    if data is None:
        data = load_dataset(
            name,
            data_dir=Path(data_dir or config.get("data_dir") or "") if (data_dir or config.get("data_dir")) else None,
            image_size=config["data"]["image_size"] if transfer else config.get("image_size"),
            val_fraction=None if transfer else config.get("val_fraction"),
            test_fraction=None if transfer else config.get("test_fraction"),
            skip_bad_images=config.get("skip_bad_images", False),
            decode_size=None if transfer else config.get("decode_size"),
            workers=config.get("workers"),
        )
    if data.channels != config["data"]["channels"]:
        data = data.with_channels(config["data"]["channels"])
    if settings is None:
        settings = run_settings(config)
    device = _device(accelerator)
    start = time.perf_counter()
    evaluation = evaluate_backbone(backbone.to(device), feature_dim, data, protocols, settings, device, accelerator)
    entry = {
        "dataset": name,
        "checkpoint": str(checkpoint),
        "method": config["method"],
        "protocols": list(protocols),
        "splits": data.sizes(),
        "val": evaluation.metrics["val"],
        "test": evaluation.metrics["test"],
        "linear_weight_decay": evaluation.linear_weight_decay,
        "seconds": time.perf_counter() - start,
    }
    if save_features is not None:
        labels = {name: data.split(name).labels for name in evaluation.raw_features}
        write_features(save_features, evaluation.raw_features, labels)
    path = run_dir / "eval.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    previous = entries.get(name)
    if previous is not None and previous.get("checkpoint") == entry["checkpoint"]:
        # the same backbone evaluated again: keep the protocols that did not run this time
        for split in ("val", "test"):
            entry[split] = previous.get(split, {}) | entry[split]
        entry["protocols"] = list(dict.fromkeys(previous.get("protocols", []) + entry["protocols"]))
        if entry["linear_weight_decay"] is None:
            entry["linear_weight_decay"] = previous.get("linear_weight_decay")
    entries[name] = entry
    path.write_text(json.dumps(entries, indent=2))
    if plots:
        own = name == config["dataset"]
        suffix = "" if own else "-" + "".join(c if c.isalnum() else "_" for c in name).strip("_")
        curves = sorted(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
        write_run_plots(
            run_dir / f"plots{suffix}", evaluation, data, curves if own else [], title=f"{config['method']} on {name}"
        )
    return entry


def write_features(path: str | Path, features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
    """Save ``{split: {"features": (N, F) float32, "labels": (N,) int64}}`` with ``torch.save``."""
    torch.save({name: {"features": features[name].cpu(), "labels": labels[name].cpu()} for name in features}, path)


def read_features(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits written by :func:`write_features`: ``{split: (features, labels)}``."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    missing = [name for name in ("train", "val", "test") if name not in saved]
    if missing:
        raise ValueError(
            f"{path} lacks the splits {missing}; expected a file written by `tcl-ssl eval --save-features`"
        )
    return {name: (split["features"], split["labels"]) for name, split in saved.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl eval``: parse the command line, evaluate, print the table."""
    from tcl_ssl.cli import format_metrics

    parser = argparse.ArgumentParser(
        prog="tcl-ssl eval",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", help="run directory or checkpoint (.ckpt) of any method")
    parser.add_argument("--protocols", default="knn,linear", help=f"comma-separated, of: {', '.join(PROTOCOLS)}")
    parser.add_argument("--dataset", default=None, help="evaluate on another dataset (default: the run's)")
    parser.add_argument("--data-dir", default=None, help="where torchvision datasets are stored")
    parser.add_argument("--knn-k", type=int, default=None, help="(default: the run's, 200 unless changed)")
    parser.add_argument("--knn-temperature", type=float, default=None, help="(default: the run's, 0.1 unless changed)")
    parser.add_argument("--linear-aug-epochs", type=int, default=90, help="epochs of the linear-aug protocol")
    parser.add_argument("--linear-aug-batch-size", type=int, default=256)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--save-features",
        default=None,
        metavar="FILE",
        help="also save the backbone's features and labels of each split (torch.save)",
    )
    args = parser.parse_args(argv)
    settings = run_settings(
        run_config(resolve_checkpoint(args.run)),
        args.knn_k,
        args.knn_temperature,
        linear_aug_epochs=args.linear_aug_epochs,
        linear_aug_batch_size=args.linear_aug_batch_size,
    )
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    entry = evaluate_run(
        args.run,
        protocols,
        args.dataset,
        data_dir=args.data_dir,
        settings=settings,
        accelerator=args.accelerator,
        plots=not args.no_plots,
        save_features=args.save_features,
    )
    print(f"{entry['method']} backbone on {entry['dataset']} (splits {entry['splits']}), {entry['seconds']:.0f} s")
    print(format_metrics({"val": entry["val"], "test": entry["test"]}))
    return 0
