"""HCL (Robinson et al., ICLR 2021): SimCLR whose negatives are reweighted towards the hard ones."""

from __future__ import annotations

from typing import Any

from baselines.debiased import Debiased
from tcl_ssl.methods.base import TrainingDefaults
from tcl_ssl.relatives import HCLLoss


class HCL(Debiased):
    """Hard-negative contrastive learning: :class:`~baselines.debiased.Debiased` with :class:`~tcl_ssl.relatives.HCLLoss`.

    Each view's positives are the other views of its image, its negatives every other view in
    the (global) batch, weighted by ``softmax(beta s / t)`` and debiased by ``tau+``.
    Self-supervised only: the loss is defined without labels.

    Defaults: temperature 0.5, ``tau+`` 0.1, ``beta`` 1.0 and a head 512 -> 128 (BatchNorm,
    ReLU): the official code's (joshr17/HCL ``image/main.py`` and ``model.py``; the
    paper trains CIFAR-10 with the same script, Adam lr 1e-3, weight decay 1e-6, batch 256,
    400 epochs). The trainer offers SGD and LARS, not Adam, so the optimiser, learning rate,
    weight decay, warm-up and the ``simclr`` augmentation are SimCLR's (``simclr``'s
    defaults): HCL is SimCLR with another loss.

    Args:
        *args: :class:`~baselines.debiased.Debiased`'s arguments.
        beta: hardness of the negatives' weights (>= 0; 0 is ``debiased``).
        **kwargs: :class:`~baselines.debiased.Debiased`'s keyword arguments (``temperature``,
            ``tau_plus``, ``hidden_dim``, ``output_dim``, and :class:`~tcl_ssl.methods.Method`'s).
    """

    name = "hcl"
    defaults = TrainingDefaults(optimizer="lars", lr=1.0, weight_decay=1e-4, warmup_epochs=10, augmentation="simclr")
    source = "HCL official code (joshr17/HCL image/main.py: t, tau+, beta, head); optimiser, augmentation: simclr's"
    search_space = {"beta": (0.5, 1.0, 2.0), "tau_plus": (0.05, 0.1), "temperature": (0.2, 0.5)}

    def __init__(self, *args: Any, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.criterion = HCLLoss(self.criterion.temperature, self.criterion.tau_plus, beta, gather_distributed=True)
