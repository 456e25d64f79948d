"""A trained backbone out of a run, as a file (:func:`export_backbone`, ``tcl-ssl export``), and
back (:func:`load_backbone`).

The exported file holds a plain torchvision ResNet ``state_dict`` (without ``fc``) and what it
needs to be used: the architecture, the stem (``imagenet``, ``small`` or ``small-pool``, see
:func:`tcl_ssl.backbones.build_backbone`), the input channels and image size, and the
per-channel mean/std that its inputs were normalised with during pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from tcl_ssl.backbones import build_backbone
from tcl_ssl.checkpointing import RUN_ADVICE, read_checkpoint
from tcl_ssl.runs import RunRecord, read_record, resolve_checkpoint
from tcl_ssl.safe_io import DamagedFileError, check_archive, error_line, save_torch

FORMAT = "tcl-ssl-backbone"
VERSION = 1


class RunBackbone(NamedTuple):
    """A run's trained backbone (:func:`backbone_from_run`)."""

    backbone: nn.Module
    """the trunk with its trained weights, in eval mode"""
    feature_dim: int
    """its feature width"""
    record: RunRecord
    """the run's record (``config.json``)"""
    global_step: int
    """the optimiser steps its weights were trained for (the checkpoint's ``global_step``)"""


def backbone_from_run(path: str | Path) -> RunBackbone:
    """The backbone of a run (directory or checkpoint) with its trained weights, its feature
    width, the run's record and the checkpoint's step. Works for every method (each keeps its
    online network's trunk as ``backbone``).

    Raises:
        tcl_ssl.safe_io.DamagedFileError: naming the checkpoint, if it is damaged or not a
            checkpoint written by ``tcl-ssl pretrain`` (:func:`tcl_ssl.checkpointing.read_checkpoint`).
        ValueError: naming the file, for a run directory without a checkpoint or a bad ``config.json``.
    """
    checkpoint = resolve_checkpoint(path)
    record = read_record(checkpoint)
    stem = record.config.model.stem
    if stem is None:
        raise ValueError(
            f"{record.run_dir}/config.json lacks the stem the run resolved; it was not written by pretrain"
        )
    backbone, feature_dim = build_backbone(record.config.model.backbone, record.dataset.channels, stem)
    content = read_checkpoint(checkpoint, RUN_ADVICE)
    state = content["state_dict"]
    weights = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    backbone.load_state_dict(weights)
    return RunBackbone(backbone.eval(), feature_dim, record, int(content["global_step"]))


class PretrainedBackbone(nn.Module):
    """A pretrained ResNet trunk with its input normalisation: images ``(B, C, H, W)``, uint8 or
    float in ``[0, 1]``, to features ``(B, feature_dim)``.

    ``resnet`` is the plain torchvision module (normalised inputs); ``image_size``, ``mean`` and
    ``std`` are those of pretraining.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, resnet: nn.Module, feature_dim: int, mean: Sequence[float], std: Sequence[float], image_size: int
    ) -> None:
        super().__init__()
        self.resnet = resnet
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div(255.0)
        return self.resnet((images - self.mean) / self.std)


def export_backbone(run: str | Path, out: str | Path) -> Path:
    """Write the backbone of ``run`` (directory or checkpoint) to ``out``; see the module docstring.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        tcl_ssl.safe_io.WriteError: if ``out`` cannot be written (naming it, its directory and
            why); a file that was at ``out`` is left as it was.
    """
    backbone, feature_dim, record, _ = backbone_from_run(run)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": record.config.model.backbone,
        "stem": record.config.model.stem,
        "in_channels": record.dataset.channels,
        "feature_dim": feature_dim,
        "image_size": record.dataset.image_size,
        "mean": list(record.dataset.mean),
        "std": list(record.dataset.std),
        "method": record.config.method.name,
        "state_dict": backbone.state_dict(),
    }
    return save_torch(payload, out)  # whole or not at all: a failed write keeps the file that was there


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> PretrainedBackbone:
    """The backbone exported by :func:`export_backbone`, ready to use (eval mode).

    Raises:
        tcl_ssl.safe_io.DamagedFileError: naming the file, if it is truncated or damaged.
        ValueError: naming the file, if it is not a backbone exported by ``tcl-ssl export``
            (another torch file, a text file) or has a newer format version.
    """
    advice = "export it again with tcl-ssl export"
    try:
        check_archive(path, advice=advice)
    except DamagedFileError:
        if _is_zip(path):
            raise
        raise ValueError(f"{str(path)!r} is not a backbone exported by tcl-ssl export (not a torch file)") from None
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # whole, but not what torch.load(weights_only=True) reads
        raise ValueError(f"{str(path)!r} is not a backbone exported by tcl-ssl export ({error_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a backbone exported by tcl-ssl export")
    if payload["version"] > VERSION:
        raise ValueError(f"{str(path)!r} has format version {payload['version']}; this tcl-ssl reads up to {VERSION}")
    resnet, feature_dim = build_backbone(payload["arch"], payload["in_channels"], payload["stem"])
    resnet.load_state_dict(payload["state_dict"])
    return PretrainedBackbone(resnet, feature_dim, payload["mean"], payload["std"], payload["image_size"]).eval()


def _is_zip(path: str | Path) -> bool:
    """Whether ``path`` starts like a zip archive (a torch file, perhaps cut off)."""
    with open(path, "rb") as file:
        return file.read(4) == b"PK\x03\x04"
