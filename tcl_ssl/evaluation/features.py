"""Backbone features of a whole split, computed once in eval mode; under DDP, each process
computes a shard and the shards are gathered."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from tcl_ssl.data import FileSplit, Split, iterate_batches


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    split: Split | FileSplit,
    preprocess: nn.Module,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    normalize: bool = True,
) -> Tensor:
    """Backbone features ``(N, F)`` of a split in float32, on the CPU.

    Args:
        backbone: maps normalised images ``(B, C, H, W)`` to features ``(B, F)``; run in eval mode
            (its train/eval mode is restored after).
        split: the uint8 images to embed, in order (in memory, or read from files).
        preprocess: maps a uint8 batch to a list whose first entry is the normalised input (the
            ``eval`` augmentation pipeline).
        batch_size: images per forward pass.
        device: where to run the backbone (default: where its parameters are).
        normalize: L2-normalise each feature (for kNN and retrieval; the linear probe takes raw
            features).

    Returns:
        The features, float32 ``(N, F)`` on the CPU, row ``i`` for image ``i`` of ``split``.

    Example:
        >>> import torch
        >>> import augmentations
        >>> from tcl_ssl.data import Split
        >>> from tcl_ssl.evaluation import extract_features
        >>> split = Split(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.zeros(5, dtype=torch.long))
        >>> preprocess = augmentations.build("eval", image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3, num_views=1)
        >>> backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> extract_features(backbone, split, preprocess).shape
        torch.Size([5, 4])
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


def gather_features(
    backbone: nn.Module,
    split: Split | FileSplit,
    preprocess: nn.Module,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    normalize: bool = True,
) -> Tensor:
    """:func:`extract_features` of the whole split, shared out over the processes of an initialised
    ``torch.distributed`` group: process ``r`` of ``W`` embeds images ``r, r + W, ...`` and every
    process gets all ``(N, F)`` features, in the split's order. Every process must call it (it
    is a collective); in a single process it is :func:`extract_features`.

    Args:
        backbone: as for :func:`extract_features`.
        split: as for :func:`extract_features`.
        preprocess: as for :func:`extract_features`.
        batch_size: as for :func:`extract_features`.
        device: as for :func:`extract_features`.
        normalize: as for :func:`extract_features`.

    Returns:
        All ``(N, F)`` float32 features on the CPU, on every process.
    """
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return extract_features(backbone, split, preprocess, batch_size, device, normalize)
    rank = dist.get_rank()
    # NCCL reduces and gathers CUDA tensors only, gloo CPU ones
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    shard = split.subset(torch.arange(len(split))[rank::world])  # empty where rank >= len(split)
    local = extract_features(backbone, shard, preprocess, batch_size, device, normalize) if len(shard) else None
    rows = -(-len(split) // world)  # the largest shard; the others are padded to it
    dim = torch.tensor([0 if local is None else local.shape[1]], device=on)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX)  # a process whose shard is empty learns the width
    padded = torch.zeros(rows, int(dim), dtype=torch.float32)
    if local is not None:
        padded[: len(local)] = local
    parts = [torch.empty_like(padded, device=on) for _ in range(world)]
    dist.all_gather(parts, padded.to(on))
    # row i of the split is row i // W of process i % W
    return torch.stack([p.cpu() for p in parts], dim=1).reshape(rows * world, -1)[: len(split)]
