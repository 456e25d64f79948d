"""Retrieval metrics of features with pytorch-metric-learning's ``AccuracyCalculator``.

Queries (e.g. the test split) retrieve from a reference set (the train split) by cosine
similarity; a retrieved item is relevant when it has the query's label. Reported, in percent:
``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r`` (MAP@R, Musgrave et al.
2020), where R is the number of reference items with the query's label.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from torch import Tensor

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


@torch.no_grad()
def retrieval_metrics(
    reference: Tensor,
    reference_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Precision@1, R-precision and MAP@R (percent) of ``queries`` against ``reference``, by cosine similarity.

    Args:
        reference: ``(N, F)`` features retrieved from (need not be normalised).
        reference_labels: ``(N,)`` int64 labels of ``reference``.
        queries: ``(Q, F)`` features that retrieve (need not be normalised).
        query_labels: ``(Q,)`` int64 labels of ``queries``.
        device: where to compute (default: where ``reference`` is).
        batch_size: queries per similarity block.

    Returns:
        ``{"precision_at_1": ..., "r_precision": ..., "mean_average_precision_at_r": ...}`` in percent.
    """
    device = reference.device if device is None else torch.device(device)
    calculator = AccuracyCalculator(
        include=METRICS,
        k="max_bin_count",
        device=device,
        knn_func=CustomKNN(CosineSimilarity(), batch_size=batch_size),
    )
    result = calculator.get_accuracy(queries, query_labels, reference, reference_labels, ref_includes_query=False)
    return {name: 100.0 * float(result[name]) for name in METRICS}
