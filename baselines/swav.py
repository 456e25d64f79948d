"""SwAV (Caron et al., NeurIPS 2020): swapped prediction of Sinkhorn cluster codes, multi-crop."""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import Tensor, nn

from tcl_ssl.methods.base import Method, TrainingDefaults, check_positive, check_size, split_crops


class SwAV(Method):
    """SwAV with lightly's ``SwaVProjectionHead``, ``SwaVPrototypes`` and ``SwaVLoss``, multi-crop.

    Every view, global and local, goes through the backbone and the projection head; its
    L2-normalised projection ``z`` is scored against ``num_prototypes`` prototypes (unit vectors,
    renormalised before every step; cosines, without the bias of lightly's prototype layer, as
    in the official code). For each global view, the Sinkhorn-Knopp algorithm turns
    its scores (``sinkhorn_iterations`` iterations at ``sinkhorn_epsilon``, across processes)
    into soft codes that spread the batch evenly over the prototypes; every other view predicts
    those codes with a softmax of its scores at ``temperature``. The loss is the cross-entropy,
    averaged over the other views and the global views. The prototypes get no update during
    the first ``freeze_prototypes_epochs`` epochs (their gradients are dropped, as the paper's
    code does).

    Queue: each global view keeps the ``queue_size`` latest projections of this process
    (lightly's ``MemoryBankModule``, in the checkpoint); from epoch ``queue_start_epoch`` on,
    their scores join the batch's in the Sinkhorn algorithm (which the small CIFAR batches need
    to spread the codes), the codes of the batch's rows are kept. The queue fills every step
    while the criterion is in training mode. ``queue_size=0`` turns it off.

    Defaults: head 2048 -> 128, 3000 prototypes, temperature 0.1, 3 Sinkhorn iterations at
    epsilon 0.05, prototypes frozen for 2 epochs, a queue of 3840 from epoch 50; LARS lr 0.6 at
    batch 256, weight decay 1e-6, 10 warm-up epochs; the ``simclr`` augmentation pipeline, two
    32 px global views, no local crops. Source: solo-learn's CIFAR-10 configuration
    ``scripts/pretrain/cifar/swav.yaml`` and its method defaults (``solo/methods/swav.py``); the
    lr and weight decay are also the paper's at batch 256 (appendix A.1), with LARS at trust
    coefficient 0.001 as lightly's.
    solo-learn's CIFAR augmentation (``symmetric.yaml``) is SimCLR's at colour strength 1.0:
    ``--pipeline-option jitter_strength=1.0``. Multi-crop: ``--pipeline-option local_views=6``
    adds local crops (default size ``round(image_size * 96 / 224)``, area 5-14 %: the paper's,
    as in lightly's ImageNet benchmark, whose global crops take ``min_scale=0.14``).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        hidden_dim: hidden width of the projection head.
        output_dim: output width of the projection head (and of the prototypes).
        num_prototypes: number of prototypes.
        temperature: temperature of the predictions' softmax (> 0).
        sinkhorn_iterations: iterations of the Sinkhorn-Knopp algorithm.
        sinkhorn_epsilon: the Sinkhorn-Knopp algorithm's temperature (> 0).
        freeze_prototypes_epochs: epochs during which the prototypes are not updated.
        queue_size: projections kept per global view (0: no queue).
        queue_start_epoch: first epoch whose Sinkhorn steps use the queue.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.
    """

    name = "swav"
    views = (2, 2)
    compared_in = ("self-supervised",)
    multi_crop = True
    defaults = TrainingDefaults(optimizer="lars", lr=0.6, weight_decay=1e-6, warmup_epochs=10, augmentation="simclr")
    source = "solo-learn cifar/swav.yaml and method defaults; multi-crop: paper"
    search_space = {"num_prototypes": (100, 1000, 3000), "temperature": (0.1, 0.2)}

    def __init__(
        self,
        *args: Any,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        freeze_prototypes_epochs: int = 2,
        queue_size: int = 3840,
        queue_start_epoch: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (
            ("hidden_dim", hidden_dim),
            ("output_dim", output_dim),
            ("num_prototypes", num_prototypes),
            ("sinkhorn_iterations", sinkhorn_iterations),
        ):
            check_size(name, value)
        check_positive("temperature", temperature)
        check_positive("sinkhorn_epsilon", sinkhorn_epsilon)
        for name, value in (
            ("freeze_prototypes_epochs", freeze_prototypes_epochs),
            ("queue_size", queue_size),
            ("queue_start_epoch", queue_start_epoch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.queue_start_epoch = queue_start_epoch
        self.projection_head = SwaVProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prototypes = SwaVPrototypes(output_dim, num_prototypes)
        # Scores are cosines to unit prototypes, without a bias, as in the official code (lightly's
        # prototype layer has one).
        self.prototypes.heads[0] = nn.Linear(output_dim, num_prototypes, bias=False)
        self.criterion = SwaVLoss(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            sinkhorn_epsilon=sinkhorn_epsilon,
            sinkhorn_gather_distributed=True,
        )
        self.queues = nn.ModuleList()
        if queue_size:
            for _ in range(self.views[0]):
                queue = MemoryBankModule((queue_size, output_dim), feature_dim_first=False)
                for name in ("bank", "bank_ptr"):  # lightly (1.6) registers them with persistent=False
                    queue.register_buffer(name, getattr(queue, name), persistent=True)
                self.queues.append(queue)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        with torch.no_grad():
            self.prototypes.normalize()
        global_views, _ = split_crops(views)
        z = [nn.functional.normalize(p, dim=1) for p in self.project_views(views, self.projection_head)]
        scores = torch.stack([self.prototypes(zi) for zi in z])
        high, low = scores[: len(global_views)], scores[len(global_views) :]
        queue_scores = None
        if self.queues and len(global_views) != len(self.queues):
            raise ValueError(
                f"swav keeps one queue per full-size view ({len(self.queues)}), got {len(global_views)} full-size "
                "views (a weak view is one); drop weak_view or run with -o queue_size=0"
            )
        if self.queues:
            with torch.no_grad():
                use = self.current_epoch >= self.queue_start_epoch
                banks = [queue(zi.detach(), update=self.criterion.training)[1] for queue, zi in zip(self.queues, z)]
                if use:
                    queue_scores = torch.stack([self.prototypes(bank) for bank in banks])
        if queue_scores is None:
            return self.float32_loss(self._swapped_prediction, high, low)
        return self.float32_loss(self._swapped_prediction, high, low, queue_scores)

    def _swapped_prediction(self, high: Tensor, low: Tensor, queue: Tensor | None = None) -> Tensor:
        """lightly's SwAV loss of ``(G, B, K)`` global and ``(L, B, K)`` local scores, with the
        ``(G, Q, K)`` queue scores in the Sinkhorn steps where given; a scalar."""
        loss = self.criterion(list(high), list(low), None if queue is None else list(queue))
        return loss.squeeze(0)

    def on_after_backward(self) -> None:
        """Drop the prototypes' gradients during the first ``freeze_prototypes_epochs`` epochs."""
        if self.current_epoch < self.freeze_prototypes_epochs:
            for param in self.prototypes.parameters():
                param.grad = None
