"""Backbones: torchvision ResNets with a stem suited to the image size.

``build_backbone`` returns a module mapping images ``(B, C, H, W)`` to features
``(B, feature_dim)`` (the ResNet without its classifier) and ``feature_dim``.
"""

from __future__ import annotations

import torchvision
from torch import nn

#: the backbones :func:`build_backbone` builds
RESNETS = ("resnet18", "resnet34", "resnet50")
#: the stems :func:`build_backbone` builds (see its ``stem`` argument)
STEMS = ("imagenet", "small", "small-pool")


def build_backbone(name: str = "resnet18", in_channels: int = 3, stem: str = "imagenet") -> tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet without classifier, and its feature dimension.

    Args:
        name: one of ``resnet18``, ``resnet34``, ``resnet50``.
        in_channels: image channels (1 for grayscale, 3 for RGB).
        stem: ``imagenet``: torchvision's 7x7 stride-2 conv + max-pool (4x down, for >= 96 px);
            ``small``: 3x3 stride-1 conv, no max-pool (the CIFAR stem, full resolution; for
            32 px); ``small-pool``: 3x3 stride-1 conv + max-pool (2x down: the residual
            stages see a quarter of ``small``'s pixels).

    Returns:
        ``(backbone, feature_dim)``: the module maps images ``(B, in_channels, H, W)`` to
        features ``(B, feature_dim)``; ``feature_dim`` is 512 for ``resnet18`` and ``resnet34``,
        2048 for ``resnet50``.

    Raises:
        ValueError: for an unknown ``name`` or ``stem``, or ``in_channels`` < 1.

    Example:
        >>> import torch
        >>> from tcl_ssl.backbones import build_backbone
        >>> backbone, feature_dim = build_backbone("resnet18", in_channels=1, stem="small")
        >>> backbone(torch.zeros(2, 1, 32, 32)).shape, feature_dim
        (torch.Size([2, 512]), 512)
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(RESNETS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; available: {', '.join(STEMS)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    resnet = getattr(torchvision.models, name)(weights=None)
    if stem == "imagenet":
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if stem == "small":
            resnet.maxpool = nn.Identity()
    feature_dim = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet, feature_dim
