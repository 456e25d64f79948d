"""Linear probe, standard protocol: a linear layer on the frozen backbone, trained on augmented images.

lightly's ``LinearClassifier`` (SGD with momentum 0.9, lr ``0.1 x batch / 256``, no weight decay,
cosine schedule by step, frozen backbone in eval mode) run by a Lightning Trainer, with the
light augmentation of linear evaluation (random resized crop of 8-100 % of the area +
horizontal flip: the ``crop-flip`` pipeline with torchvision's default scale) applied on the
device, like pretraining's. Reported: top-1 and top-5 on the evaluation split, without
augmentation.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import LinearClassifier
from torch import Tensor, nn

import augmentations
from tcl_ssl.data import FileSplit, ImageData, Split, batch_loader, iterate_batches
from tcl_ssl.evaluation.knn import topk_accuracy


class AugmentedLinearClassifier(LinearClassifier):
    """lightly's ``LinearClassifier`` fed with uint8 batches, augmented (training) or
    preprocessed (evaluation) on the device."""

    augment: nn.Module
    preprocess: nn.Module

    @classmethod
    def build(
        cls, model: nn.Module, augment: nn.Module, preprocess: nn.Module, **kwargs: Any
    ) -> AugmentedLinearClassifier:
        """The classifier over ``model`` with its two transforms (set after construction, so that
        Lightning's saved hyper-parameters stay lightly's); ``kwargs`` are lightly's."""
        classifier = cls(model, **kwargs)
        classifier.augment = augment
        classifier.preprocess = preprocess
        return classifier

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augment (training) or preprocess (evaluation) the uint8 images of ``(images, labels)``."""
        images, labels = batch
        with torch.no_grad():
            transform = self.augment if self.trainer is not None and self.trainer.training else self.preprocess
            return transform(images)[0], labels


@torch.no_grad()
def _predict(
    classifier: AugmentedLinearClassifier, split: Split | FileSplit, device: torch.device, batch_size: int = 512
) -> Tensor:
    classifier.eval().to(device)
    predictions = []
    for images, _ in iterate_batches(split, batch_size):
        logits = classifier(classifier.preprocess(images.to(device))[0])
        predictions.append(logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu())
    return torch.cat(predictions)


def augmented_linear_probe(
    backbone: nn.Module,
    feature_dim: int,
    data: ImageData,
    eval_splits: dict[str, Split | FileSplit],
    *,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    accelerator: str = "auto",
    limit_train_batches: float | int = 1.0,
) -> dict[str, dict[str, float]]:
    """Train lightly's ``LinearClassifier`` on ``data.train`` and report top-1 and top-5 on other splits.

    The backbone's weights are not changed (frozen, eval mode; its mode and ``requires_grad``
    flags are restored); it is left on the Trainer's device.

    Args:
        backbone: maps normalised images ``(B, C, H, W)`` to features ``(B, feature_dim)``.
        feature_dim: the backbone's output width.
        data: the dataset; its train split trains the classifier.
        eval_splits: the splits to report, by name.
        epochs: training epochs (>= 1).
        batch_size: images per batch, at most the train split's size.
        lr: learning rate at batch size 256, scaled linearly with the batch size.
        seed: seed of the classifier's initialisation, the batch order and the augmentation.
        accelerator: the Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        limit_train_batches: Lightning's limit on the training batches per epoch.

    Returns:
        ``{name: {"top1": ..., "top5": ...}}``: accuracy in percent on each of ``eval_splits``.

    Raises:
        ValueError: when ``epochs`` < 1.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    pl.seed_everything(seed, workers=True, verbose=False)
    batch_size = min(batch_size, len(data.train))
    classifier = AugmentedLinearClassifier.build(
        backbone,
        augmentations.build(  # torchvision's default crop scale (8-100 %)
            "crop-flip", min_scale=0.08, image_size=data.image_size, mean=data.mean, std=data.std, num_views=1
        ),
        augmentations.build("eval", image_size=data.image_size, mean=data.mean, std=data.std, num_views=1),
        batch_size_per_device=batch_size,
        lr=lr,
        feature_dim=feature_dim,
        num_classes=data.num_classes,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_train_batches=limit_train_batches,
    )
    was_training = backbone.training
    requires_grad = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(False)
    try:
        loader = batch_loader(data.train, batch_size, shuffle=True, drop_last=True, seed=seed)
        trainer.fit(classifier, train_dataloaders=loader)
        device = trainer.strategy.root_device
        result = {
            name: topk_accuracy(_predict(classifier, split, device), split.labels)
            for name, split in eval_splits.items()
        }
    finally:
        backbone.train(was_training)
        for param, flag in zip(backbone.parameters(), requires_grad):
            param.requires_grad_(flag)
    return result
