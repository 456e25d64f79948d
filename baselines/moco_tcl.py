"""TCL inside MoCo: the momentum encoder and queue of :mod:`baselines.moco` with TCL as the criterion."""

from __future__ import annotations

from torch import Tensor, nn

from baselines.moco import MoCo
from tcl_ssl.loss import TCLLoss


class MoCoTCL(MoCo):
    """MoCo's machinery (momentum key encoder, queue, symmetric loss, recipe) with ``TCLLoss``.

    Queries are the anchors; the current keys plus the queue are the keys (``TCLLoss`` with
    ``anchors="first"`` and a labelled memory bank). Without labels a query's positive is its
    own key and every other key and queue entry is a negative; with labels (``--supervised``)
    every key and queue entry of the query's class is a positive. This gives TCL a large set of
    negatives on small batches, where the k1 term's weight against them matters most.

    Defaults: MoCo's (``baselines.moco``), plus ``k2 = 1`` and ``k1 = 1`` (chosen on the
    validation split of the built-in digits, README "TCL inside MoCo").
    """

    name = "moco-tcl"
    with_labels = True
    source = "moco's recipe; k1 chosen on validation (README)"

    def __init__(self, *args, k1: float = 1.0, k2: float = 1.0, **kwargs) -> None:
        self._tcl_weights = (k1, k2)
        super().__init__(*args, **kwargs)

    def build_criterion(self, temperature: float, queue_size: int, output_dim: int) -> nn.Module:
        k1, k2 = self._tcl_weights
        return TCLLoss(
            temperature=temperature, k1=k1, k2=k2, gather_distributed=True,
            memory_bank_size=(queue_size, output_dim), anchors="first",
        )

    def contrast(self, queries: Tensor, keys: Tensor, labels: Tensor | None) -> Tensor:
        return self.criterion(queries, keys, labels=labels)
