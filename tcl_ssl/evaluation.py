"""Evaluation of frozen backbones: feature extraction and weighted kNN classification."""

from __future__ import annotations

import torch
from lightly.utils.benchmarking import knn_predict
from torch import Tensor, nn
from torch.nn import functional as F

from tcl_ssl.data import Split, iterate_batches


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    split: Split,
    preprocess: nn.Module,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """L2-normalised backbone features ``(N, F)`` of a split, in eval mode, on the CPU.

    ``preprocess`` maps a uint8 batch to a list whose first entry is the normalised input
    (the ``eval`` augmentation recipe). The backbone's train/eval mode is restored after.
    """
    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    features = []
    try:
        for images, _ in iterate_batches(split, batch_size):
            inputs = preprocess(images.to(device, non_blocking=True))[0]
            features.append(F.normalize(backbone(inputs).float(), dim=1).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(features)


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy (percent) of similarity-weighted kNN (Wu et al. 2018) on normalised features.

    ``k`` is capped at the bank size. Uses lightly's ``knn_predict``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, train_features.shape[0])
    bank = train_features.T.contiguous()
    correct = 0
    for start in range(0, test_features.shape[0], chunk):
        pred = knn_predict(test_features[start : start + chunk], bank, train_labels, num_classes, k, temperature)
        correct += int((pred[:, 0] == test_labels[start : start + chunk]).sum())
    return 100.0 * correct / test_features.shape[0]
