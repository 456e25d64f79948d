"""TCL inside MoCo: the momentum encoder and queue of :mod:`baselines.moco` with TCL as the criterion."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from baselines.moco import MoCo
from tcl_ssl.loss import TCLLoss


class MoCoTCL(MoCo):
    """MoCo's machinery (momentum key encoder, queue, symmetric loss, training defaults) with ``TCLLoss``.

    Queries are the anchors; the current keys of the other view plus the queue are the keys
    (``TCLLoss`` with ``anchors="first"`` and a labelled memory bank). Without labels a query's
    positive is its image's key and every other key and queue entry is a negative; with labels
    (``--supervised``) every key and queue entry of the query's class is a positive. Both terms
    see the queue as it was before the step; the keys of both views are enqueued after them.

    Defaults: MoCo's (:class:`~baselines.moco.MoCo`), temperature 0.2 in both settings,
    ``k1 = 1``, ``k2 = 1``. Source: MoCo's; ``k1``: this project's validation sweep.

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        k1: TCL's ``k1`` (>= 0).
        k2: TCL's ``k2`` (> 0).
        **kwargs: :class:`~baselines.moco.MoCo`'s keyword arguments.
    """

    name = "moco-tcl"
    with_labels = True
    compared_in = ("self-supervised",)
    source = "moco's training defaults; k1 chosen on validation (docs/results/moco-tcl.md)"

    def __init__(self, *args: Any, k1: float = 1.0, k2: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.criterion = TCLLoss(
            temperature=self.temperature,
            k1=k1,
            k2=k2,
            gather_distributed=True,
            memory_bank_size=(self.queue_size, self.output_dim),
            anchors="first",
            check_inputs=False,
        )

    def symmetric_loss(self, q0: Tensor, q1: Tensor, k0: Tensor, k1: Tensor, labels: Tensor | None) -> Tensor:
        loss = 0.5 * (
            self.criterion(q0, k1, labels=labels, update_bank=False)
            + self.criterion(q1, k0, labels=labels, update_bank=False)
        )
        if self.criterion.training:
            self.criterion.enqueue(k1, k0, labels=labels)
        return loss
