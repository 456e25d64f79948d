"""Weighted k-nearest-neighbour classification of features (InstDisc, Wu et al. 2018).

The protocol of lightly's and solo-learn's benchmarks: cosine similarity between L2-normalised
features, the ``k`` most similar bank entries vote for their class with weight
``exp(similarity / temperature)``. The queries are processed in chunks sized so that the
similarity block stays under a memory budget, whatever the size of the bank.
"""

from __future__ import annotations

import torch
from torch import Tensor

WEIGHTINGS = ("similarity", "uniform")


def _check(k: int, temperature: float, weighting: str, top: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")


@torch.no_grad()
def knn_classify(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    weighting: str = "similarity",
    top: int = 5,
    memory_bytes: int = 256 * 2**20,
) -> Tensor:
    """The ``top`` most voted classes of each query, best first.

    Args:
        bank: normalised features ``(N, F)``.
        bank_labels: int64 labels ``(N,)`` of the bank, in ``[0, num_classes)``.
        queries: normalised features ``(Q, F)`` on the same device as ``bank``.
        num_classes: labels lie in ``[0, num_classes)``.
        k: neighbours per query (capped at ``N``).
        temperature: the vote of a neighbour at cosine ``s`` is ``exp(s / temperature)``.
        weighting: ``similarity`` (the above) or ``uniform`` (one vote each, as scikit-learn's
            ``KNeighborsClassifier(weights="uniform")``); ties between classes go to the lower
            class index.
        top: how many classes to return per query.
        memory_bytes: budget of the ``(chunk, N)`` similarity block; the query chunk is sized to it.

    Returns:
        int64 ``(Q, min(top, num_classes))`` class indices, the most voted first, on the bank's
        device.

    Raises:
        ValueError: for ``k < 1``, ``temperature <= 0``, an unknown ``weighting``, ``top < 1``, or
            shapes that do not match.

    Example:
        >>> import torch
        >>> from tcl_ssl.evaluation import knn_classify
        >>> bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
        >>> queries = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
        >>> knn_classify(bank, torch.tensor([0, 0, 1]), queries, num_classes=2, k=1, top=1).tolist()
        [[0], [1]]
    """
    _check(k, temperature, weighting, top)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"bank (N, F) and queries (Q, F) must share F, got {tuple(bank.shape)} and {tuple(queries.shape)}"
        )
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    k = min(k, bank.shape[0])
    top = min(top, num_classes)
    bank_labels = bank_labels.to(bank.device)
    chunk = max(1, memory_bytes // (4 * bank.shape[0]))
    predictions = []
    for start in range(0, queries.shape[0], chunk):
        similarity = queries[start : start + chunk] @ bank.T
        nearest, index = similarity.topk(k, dim=1)
        del similarity
        votes = torch.ones_like(nearest) if weighting == "uniform" else nearest.div_(temperature).exp_()
        scores = torch.zeros(nearest.shape[0], num_classes, device=bank.device, dtype=votes.dtype)
        scores.scatter_add_(1, bank_labels[index], votes)
        # a stable sort keeps tied classes in index order
        predictions.append(scores.sort(dim=1, descending=True, stable=True).indices[:, :top])
    return torch.cat(predictions)


def topk_accuracy(predictions: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percent of rows whose label is among the first ``k`` predicted classes, for each ``k``.

    Args:
        predictions: int64 ``(Q, P)`` predicted classes of each row, best first.
        labels: int64 ``(Q,)`` true labels.
        ks: the ``k`` to report (a ``k`` beyond ``P`` counts all ``P`` predictions).

    Returns:
        ``{"top1": ..., "top5": ...}``: accuracy in percent for each ``k``.

    Example:
        >>> import torch
        >>> from tcl_ssl.evaluation import topk_accuracy
        >>> predictions = torch.tensor([[0, 1], [1, 0], [1, 2], [2, 1]])
        >>> topk_accuracy(predictions, torch.tensor([0, 0, 2, 0]), ks=(1, 2))
        {'top1': 25.0, 'top2': 75.0}
    """
    hits = predictions == labels.to(predictions.device)[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    weighting: str = "similarity",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """kNN top-1 and top-5 accuracy (percent) of ``queries`` against ``bank`` (see :func:`knn_classify`).

    Args:
        bank: normalised features ``(N, F)``.
        bank_labels: int64 labels ``(N,)`` of the bank.
        queries: normalised features ``(Q, F)``.
        query_labels: int64 labels ``(Q,)`` of the queries.
        num_classes: labels lie in ``[0, num_classes)``.
        k: neighbours per query.
        temperature: the vote of a neighbour at cosine ``s`` is ``exp(s / temperature)``.
        weighting: ``similarity`` or ``uniform``.
        device: where to compute (default: where ``bank`` is).

    Returns:
        ``{"top1": ..., "top5": ...}`` in percent.

    Raises:
        ValueError: as :func:`knn_classify`.
    """
    device = bank.device if device is None else torch.device(device)
    predictions = knn_classify(
        bank.to(device),
        bank_labels,
        queries.to(device),
        num_classes,
        k=k,
        temperature=temperature,
        weighting=weighting,
    )
    return topk_accuracy(predictions, query_labels)


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (percent) of similarity-weighted kNN; see :func:`knn_accuracy`.

    Args:
        train_features: normalised bank features ``(N, F)``.
        train_labels: int64 labels ``(N,)`` of the bank.
        test_features: normalised query features ``(Q, F)``.
        test_labels: int64 labels ``(Q,)`` of the queries.
        num_classes: labels lie in ``[0, num_classes)``.
        k: neighbours per query.
        temperature: the vote of a neighbour at cosine ``s`` is ``exp(s / temperature)``.

    Returns:
        Top-1 accuracy in percent.
    """
    return knn_accuracy(
        train_features, train_labels, test_features, test_labels, num_classes, k=k, temperature=temperature
    )["top1"]
