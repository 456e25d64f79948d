"""The evaluation suite: every protocol on a frozen backbone, on the validation and test splits.

Protocols (names as in ``tcl-ssl eval --protocols``):

- ``knn``: similarity-weighted kNN on normalised features (k = 200, t = 0.1), top-1 and top-5;
- ``linear``: the fast linear probe on cached features, its weight decay chosen on validation;
- ``linear-aug``: the standard linear protocol (lightly's ``LinearClassifier`` on augmented images);
- ``retrieval``: precision@1, R-precision and MAP@R (pytorch-metric-learning).

The train split is always the bank (kNN, retrieval) or the training set (probes); each metric is
reported for the queries of the ``val`` and ``test`` splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import augmentations
from tcl_ssl.config.checks import PROTOCOLS  # the protocols evaluate_backbone runs, declared once
from tcl_ssl.data import ImageData
from tcl_ssl.evaluation.features import gather_features
from tcl_ssl.evaluation.knn import knn_accuracy, topk_accuracy
from tcl_ssl.evaluation.linear import probe_predictions, select_linear_probe

#: the splits whose images are the queries (the train split is the bank or training set)
QUERY_SPLITS = ("val", "test")


@dataclass
class EvalSettings:
    """Options of the protocols.

    Attributes:
        knn_k: neighbours per query of the ``knn`` protocol.
        knn_temperature: temperature of the ``knn`` protocol's votes.
        linear_aug_epochs: training epochs of the ``linear-aug`` probe.
        linear_aug_batch_size: batch size of the ``linear-aug`` probe.
        linear_aug_lr: learning rate of the ``linear-aug`` probe at batch size 256 (scaled
            linearly with the batch size).
        seed: seed of the ``linear-aug`` probe.
    """

    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_aug_epochs: int = 90
    linear_aug_batch_size: int = 256
    linear_aug_lr: float = 0.1  # at batch 256, scaled linearly (lightly's LinearClassifier)
    seed: int = 0


@dataclass
class Evaluation:
    """What :func:`evaluate_backbone` measured.

    Attributes:
        metrics: ``{"val": {...}, "test": {...}}``, percent: ``knn_top1``, ``knn_top5``,
            ``linear_top1``, ``linear_top5``, ``linear_aug_top1``, ``linear_aug_top5``,
            ``precision_at_1``, ``r_precision``, ``map_at_r`` (those of the protocols run).
        linear_weight_decay: the fast probe's weight decay chosen on validation (``None`` without it).
        raw_features: the backbone's features of the ``train``, ``val`` and ``test`` splits, not normalised.
        test_features: normalised test features ``(N, F)`` (for pictures).
        test_linear_predictions: the fast probe's top-1 class of each test image (``None`` without it).
    """

    metrics: dict[str, dict[str, float]]
    linear_weight_decay: float | None = None
    raw_features: dict[str, Tensor] = field(default_factory=dict)
    test_features: Tensor | None = None
    test_linear_predictions: Tensor | None = None


def check_protocols(protocols: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``protocols`` as a tuple.

    Raises:
        ValueError: when it is empty or names a protocol not in :data:`PROTOCOLS`.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"protocols must be a non-empty subset of {', '.join(PROTOCOLS)}, got {list(protocols)}")
    return tuple(protocols)


def split_features(backbone: nn.Module, data: ImageData, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Raw (not normalised) backbone features of the ``train``, ``val`` and ``test`` splits.

    The images go through the ``eval`` augmentation pipeline. Under an initialised
    ``torch.distributed`` group every process must call it: each embeds a shard, all get
    everything.

    Args:
        backbone: maps normalised images ``(B, C, H, W)`` to features ``(B, F)``.
        data: the dataset.
        device: where to run the backbone (default: where its parameters are).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``: float32 ``(N, F)`` features on the CPU.
    """
    preprocess = augmentations.build("eval", image_size=data.image_size, mean=data.mean, std=data.std, num_views=1)
    return {
        name: gather_features(backbone, data.split(name), preprocess, device=device, normalize=False)
        for name in ("train", *QUERY_SPLITS)
    }


def evaluate_backbone(
    backbone: nn.Module,
    feature_dim: int,
    data: ImageData,
    protocols: tuple[str, ...] = ("knn", "linear"),
    settings: EvalSettings | None = None,
    device: torch.device | str | None = None,
    accelerator: str = "auto",
    features: dict[str, Tensor] | None = None,
) -> Evaluation:
    """Run the evaluation ``protocols`` on a frozen backbone over ``data``'s splits.

    The train split is the kNN and retrieval bank and the probes' training set; every metric is
    reported for the ``val`` and ``test`` splits.

    Args:
        backbone: maps normalised images ``(B, C, H, W)`` to features ``(B, feature_dim)``;
            not trained (its train/eval mode is restored).
        feature_dim: the backbone's output width.
        data: the dataset.
        protocols: some of :data:`PROTOCOLS`.
        settings: the protocols' options (default: :class:`EvalSettings`'s).
        device: where to compute (default: where the backbone's parameters are).
        accelerator: the Lightning accelerator of the ``linear-aug`` probe.
        features: the splits' :func:`split_features`, where they were computed already (e.g.
            by all processes of a DDP run); ``None`` computes them.

    Returns:
        The metrics, in percent, and what the pictures need; see :class:`Evaluation`.

    Raises:
        ValueError: for an empty or unknown protocol list.

    Example:
        >>> import torch
        >>> from tcl_ssl.data import load_dataset
        >>> from tcl_ssl.evaluation import evaluate_backbone
        >>> data = load_dataset("mnist5k")
        >>> backbone = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten())  # 7 x 7 features
        >>> result = evaluate_backbone(backbone, 49, data, protocols=("knn",), device="cpu")
        >>> sorted(result.metrics["test"])
        ['knn_top1', 'knn_top5']
    """
    from tcl_ssl.evaluation.linear_augmented import augmented_linear_probe  # deferred: imports Lightning (slow)
    from tcl_ssl.evaluation.retrieval import retrieval_metrics  # deferred: imports pytorch-metric-learning (slow)

    protocols = check_protocols(protocols)
    settings = settings or EvalSettings()
    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    raw = features if features is not None else split_features(backbone, data, device)
    unit = {name: F.normalize(features, dim=1) for name, features in raw.items()}
    labels = {name: data.split(name).labels for name in raw}
    metrics: dict[str, dict[str, float]] = {name: {} for name in QUERY_SPLITS}
    result = Evaluation(metrics, raw_features=raw, test_features=unit["test"])

    if "knn" in protocols:
        for name in QUERY_SPLITS:
            accuracy = knn_accuracy(
                unit["train"],
                labels["train"],
                unit[name],
                labels[name],
                data.num_classes,
                k=settings.knn_k,
                temperature=settings.knn_temperature,
                device=device,
            )
            metrics[name] |= {f"knn_{key}": value for key, value in accuracy.items()}
    if "linear" in protocols:
        chosen = select_linear_probe(
            (raw["train"], labels["train"]), (raw["val"], labels["val"]), data.num_classes, device=device
        )
        result.linear_weight_decay = chosen.weight_decay
        for name in QUERY_SPLITS:
            predictions = probe_predictions(chosen.probe, raw[name]).cpu()
            metrics[name] |= {f"linear_{key}": value for key, value in topk_accuracy(predictions, labels[name]).items()}
            if name == "test":
                result.test_linear_predictions = predictions[:, 0]
    if "linear-aug" in protocols:
        aug_accuracy = augmented_linear_probe(
            backbone,
            feature_dim,
            data,
            {name: data.split(name) for name in QUERY_SPLITS},
            epochs=settings.linear_aug_epochs,
            batch_size=settings.linear_aug_batch_size,
            lr=settings.linear_aug_lr,
            seed=settings.seed,
            accelerator=accelerator,
        )
        for name in QUERY_SPLITS:
            metrics[name] |= {f"linear_aug_{key}": value for key, value in aug_accuracy[name].items()}
    if "retrieval" in protocols:
        for name in QUERY_SPLITS:
            scores = retrieval_metrics(unit["train"], labels["train"], unit[name], labels[name], device=device)
            metrics[name] |= {
                "precision_at_1": scores["precision_at_1"],
                "r_precision": scores["r_precision"],
                "map_at_r": scores["mean_average_precision_at_r"],
            }
    return result
