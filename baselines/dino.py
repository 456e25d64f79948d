"""DINO (Caron et al., ICCV 2021): a student matches a momentum teacher's centred, sharpened outputs."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import Tensor

from tcl_ssl.methods.base import TrainingDefaults, check_positive, check_size, check_unit_interval, split_crops
from tcl_ssl.methods.momentum import MomentumMethod, momentum_copy


class DINO(MomentumMethod):
    """DINO with lightly's ``DINOProjectionHead`` and ``DINOLoss``, multi-crop.

    Student: backbone -> DINO head (MLP, L2 normalisation, weight-normalised last layer of
    ``output_dim`` prototypes) on every view, global and local; teacher: their momentum copy,
    on the global views only (:func:`~tcl_ssl.methods.base.split_crops`). The loss is the
    cross-entropy between the teacher's softmax of ``(t - center) / teacher_temp`` and the
    student's log-softmax of ``s / student_temp``, over every (teacher view, student view) pair
    of different views, averaged. After each step the centre moves toward the batch mean of the
    teacher's outputs with ``center_momentum`` (lightly's loss updates it); it is a buffer, so it
    is in the checkpoint. Evaluating the loss with the criterion in eval mode leaves it as it is.
    The teacher temperature rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs`` epochs (lightly's schedule, by epoch). The last layer of the
    student's head gets no update during the first ``freeze_last_layer`` epochs.

    Defaults: head 2048 -> bottleneck 256 -> 4096 prototypes, last layer normalised, no batch
    norm in the head; student temperature 0.1, teacher 0.07 without warm-up (0.04 where one is
    asked for), last layer frozen for 1 epoch; the ``byol`` augmentation pipeline (solo-learn's
    CIFAR ``asymmetric.yaml``), two 32 px global views and no local crops. Source: solo-learn's
    CIFAR-10 configuration ``scripts/pretrain/cifar/dino.yaml`` and its method defaults
    (``solo/methods/dino.py``). The centre momentum 0.9, the teacher momentum 0.996 -> 1.0
    (cosine by step) and the optimiser, SGD lr 0.03 at batch 256 with weight decay 1e-4 and 10
    warm-up epochs: the official ResNet-50 recipe (facebookresearch/dino README, as lightly's
    ImageNet benchmark). solo-learn's teacher momentum 0.9995 suits its 1000 epochs (a short
    run's teacher would stay near its initial weights), and its LARS lr 0.3 belongs to its own
    LARS (trust coefficient 0.02, clipped), about 20x the steps of lightly's (0.001). Multi-crop: ``--pipeline-option local_views=6`` adds local crops
    (default size ``round(image_size * 96 / 224)``, area 5-14 %: the DINO ResNet-50 recipe, as in
    lightly's ImageNet benchmark; there the global crops take ``min_scale=0.14``).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        hidden_dim: hidden width of the head's MLP.
        bottleneck_dim: width of the MLP's output, before the last layer.
        output_dim: number of prototypes (the last layer's width).
        student_temp: temperature of the student's softmax (> 0).
        teacher_temp: temperature of the teacher's softmax after the warm-up (> 0).
        warmup_teacher_temp: the teacher's temperature in the first epoch of the warm-up (> 0).
        warmup_teacher_temp_epochs: epochs of the temperature warm-up (0: none).
        center_momentum: EMA momentum of the centre, in [0, 1].
        freeze_last_layer: epochs during which the last layer is not updated.
        norm_last_layer: keep the last layer's weight norm fixed at 1.
        momentum_start: EMA momentum of the teacher at the first step.
        momentum_end: EMA momentum at the last step (cosine in between).
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "dino"
    views = (2, 2)
    compared_in = ("self-supervised",)
    multi_crop = True
    defaults = TrainingDefaults(optimizer="sgd", lr=0.03, weight_decay=1e-4, warmup_epochs=10, augmentation="byol")
    source = (
        "solo-learn cifar/dino.yaml and method defaults (augmentation: its asymmetric.yaml); "
        "optimiser, momenta, multi-crop: official ResNet-50 recipe"
    )
    search_space = {"teacher_temp": (0.04, 0.07), "momentum_start": (0.99, 0.996, 0.9995)}

    def __init__(
        self,
        *args: Any,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 4096,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = 0.9,
        freeze_last_layer: int = 1,
        norm_last_layer: bool = True,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, momentum_start=momentum_start, momentum_end=momentum_end, **kwargs)
        for name, value in (("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim), ("output_dim", output_dim)):
            check_size(name, value)
        for temperature, degrees in (
            ("student_temp", student_temp),
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
        ):
            check_positive(temperature, degrees)
        for option, count in (
            ("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs),
            ("freeze_last_layer", freeze_last_layer),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{option} must be an integer >= 0, got {count!r}")
        check_unit_interval("center_momentum", center_momentum)
        if not isinstance(norm_last_layer, bool):
            raise ValueError(f"norm_last_layer must be true or false, got {norm_last_layer!r}")
        head_options = {
            "hidden_dim": hidden_dim,
            "bottleneck_dim": bottleneck_dim,
            "output_dim": output_dim,
            "norm_last_layer": norm_last_layer,
        }
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated (working) weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm` is deprecated", category=FutureWarning)
            self.projection_head: DINOProjectionHead = DINOProjectionHead(
                self.feature_dim, freeze_last_layer=freeze_last_layer, **head_options
            )
            # The weight-normalised last layer cannot be deep-copied: build a twin, copy its weights.
            self.projection_head_momentum = DINOProjectionHead(self.feature_dim, **head_options)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        global_views, _ = split_crops(views)
        student = torch.stack(self.project_views(views, self.projection_head))
        with torch.no_grad():
            teacher = torch.stack(
                self.project_views(global_views, self.projection_head_momentum, self.backbone_momentum)
            )
        return self.float32_loss(self._cross_entropy, teacher, student)

    def _cross_entropy(self, teacher: Tensor, student: Tensor) -> Tensor:
        """lightly's DINO loss of ``(T, B, K)`` teacher and ``(S, B, K)`` student outputs at this
        epoch's teacher temperature; the centre moves only while the criterion is training."""
        center = None if self.criterion.training else self.criterion.center.clone()
        loss = self.criterion(list(teacher), list(student), epoch=self.current_epoch)
        if center is not None:
            self.criterion.center.copy_(center)
        return loss

    def on_after_backward(self) -> None:
        """No update of the head's last layer during its first ``freeze_last_layer`` epochs."""
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)
