"""Backbone features of a whole split, computed once in eval mode."""

from __future__ import annotations

import torch
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
    normalize: bool = True,
) -> Tensor:
    """Backbone features ``(N, F)`` of a split in float32, on the CPU.

    Args:
        backbone: maps normalised images ``(B, C, H, W)`` to features ``(B, F)``; run in eval mode
            (its train/eval mode is restored after).
        split: the uint8 images to embed, in order.
        preprocess: maps a uint8 batch to a list whose first entry is the normalised input (the
            ``eval`` augmentation recipe).
        device: where to run the backbone (default: where its parameters are).
        normalize: L2-normalise each feature (for kNN and retrieval; the linear probe takes raw
            features).
    """
    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    preprocess = preprocess.to(device)
    was_training = backbone.training
    backbone.eval()
    features = []
    try:
        for images, _ in iterate_batches(split, batch_size):
            out = backbone(preprocess(images.to(device, non_blocking=True))[0]).float().flatten(1)
            features.append((F.normalize(out, dim=1) if normalize else out).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(features)
