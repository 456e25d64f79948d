"""The shared base of all pretraining methods (TCL and the baselines) as a LightningModule.

A method owns a backbone and whatever heads and losses it needs; it receives batches of uint8
images already on the device, augments them there in one batched call, and returns a loss.
It never knows where the data came from. Subclasses implement :meth:`Method.training_loss`.
"""

from __future__ import annotations

from functools import partial

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from tcl_ssl.methods.optim import OptimConfig, _lr_factor


class Method(pl.LightningModule):
    """Backbone + on-device augmentation + optimiser; the loss is the subclass's.

    Args:
        backbone: maps images ``(B, C, H, W)`` to features ``(B, feature_dim)``.
        feature_dim: backbone output width.
        augment: maps a uint8 batch ``(B, C, H, W)`` to a list of ``V`` float views.
        supervised: pass labels to :meth:`training_loss` (otherwise it gets ``None``).
        num_classes: number of classes in the data (used by supervised methods).
        optim: optimiser settings.
    """

    #: methods that can only be trained with labels (e.g. cross-entropy) set this to True
    requires_labels: bool = False

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        augment: nn.Module,
        *,
        supervised: bool = False,
        num_classes: int = 10,
        optim: OptimConfig | None = None,
    ) -> None:
        super().__init__()
        if self.requires_labels and not supervised:
            raise ValueError(f"method {type(self).__name__} is supervised only; pass supervised=True")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.augment = augment
        self.supervised = supervised
        self.num_classes = num_classes
        self.optim = optim or OptimConfig()

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features ``(B, feature_dim)`` of normalised images."""
        return self.backbone(images)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        """Scalar loss of one batch given ``V`` augmented views ``(B, C, H, W)`` each."""
        raise NotImplementedError

    def on_fit_start(self) -> None:
        """Give each process its own augmentation stream (seed_everything seeds all alike)."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment on the device: uint8 ``(images, labels)`` -> ``(views, labels)``."""
        if self.trainer is not None and self.trainer.training:
            images, labels = batch
            with torch.no_grad():
                batch = (self.augment(images), labels)
        return batch

    def training_step(self, batch, batch_idx: int) -> Tensor:
        views, labels = batch
        loss = self.training_loss(views, labels if self.supervised else None)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=labels.shape[0])
        return loss

    def parameter_groups(self) -> list[dict]:
        """Parameter groups for the optimiser; norms and biases get no weight decay."""
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self):
        lr = self.optim.lr * self.optim.batch_size * self.trainer.world_size / 256  # global batch
        optimizer = torch.optim.SGD(
            self.parameter_groups(), lr=lr, momentum=self.optim.momentum, weight_decay=self.optim.weight_decay
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        warmup = min(self.optim.warmup_epochs * steps_per_epoch, total - 1)
        # A plain function is not saved in the scheduler's state_dict, so a resumed run with
        # more epochs follows the new horizon instead of the checkpoint's.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_lr_factor, warmup=warmup, total=total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
