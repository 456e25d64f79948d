"""Stratified splits and subsets with a fixed seed, shared by the in-memory and streamed sources."""

from __future__ import annotations

import numpy as np

__all__ = ["SPLIT_SEED", "stratified_split", "stratified_subset"]

SPLIT_SEED = 0
"""Seed of every split and subset: splits are fixed, independent of the training seed."""


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified split (scikit-learn's ``train_test_split``), fixed by ``seed``.

    Args:
        labels: ``(N,)`` class label of each item.
        test_fraction: fraction of the items held out, in ``(0, 1)``.
        seed: the split's random seed.

    Returns:
        ``(train, test)``: sorted int indices of the items kept and held out.

    Raises:
        ValueError: when ``test_fraction`` is not in ``(0, 1)`` (or scikit-learn's, when a
            class has too few items to be stratified).
    """
    from sklearn.model_selection import train_test_split  # deferred: scikit-learn is slow to import

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test/validation fraction must be in (0, 1), got {test_fraction}")
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def stratified_subset(labels: np.ndarray, count: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Indices of a stratified subset of ``count`` items (scikit-learn), fixed by ``seed``.

    Args:
        labels: ``(N,)`` class label of each item.
        count: number of items to keep; all of them when ``count >= N``.
        seed: the subset's random seed.

    Returns:
        The sorted int indices of the items kept.
    """
    from sklearn.model_selection import train_test_split  # deferred: scikit-learn is slow to import

    index = np.arange(len(labels))
    if count >= len(labels):
        return index
    chosen, _ = train_test_split(index, train_size=count, stratify=labels, random_state=seed)
    return np.sort(chosen)
