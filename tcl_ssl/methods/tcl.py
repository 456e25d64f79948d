"""TCL as a pretraining method: backbone -> projection head (lightly's) -> TCLLoss."""

from __future__ import annotations

from typing import Any

from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from tcl_ssl.loss import TCLLoss
from tcl_ssl.methods.base import Method, TrainingDefaults, check_size

#: the loss's hyper-parameters where a self-supervised run leaves them unset
SELF_SUPERVISED_DEFAULTS = {"temperature": 0.1, "k1": 10.0, "k2": 1.0}
#: the loss's hyper-parameters where a supervised run leaves them unset (k1 = 0: SupCon's loss;
#: pass k1 for TCL's hard-positive term)
SUPERVISED_DEFAULTS = {"temperature": 0.1, "k1": 0.0, "k2": 1.0}


class TCL(Method):
    """Tuned Contrastive Learning; self-supervised by default, supervised with labels.

    Every view of every image is an anchor; its positives are the other views of the image
    (self-supervised) or every view of every image of its class (supervised). The head is
    lightly's ``SimCLRProjectionHead`` (``hidden_dim``, ``output_dim``); the loss is
    :class:`~tcl_ssl.loss.TCLLoss`, gathered across processes.

    Defaults: hyper-parameters left as ``None`` take :data:`SELF_SUPERVISED_DEFAULTS`
    (t 0.1, k1 10, k2 1) or :data:`SUPERVISED_DEFAULTS` (t 0.1, k1 0, k2 1); training
    defaults SGD, lr 0.06 at batch 256, weight decay 5e-4, 1 warm-up epoch, ``simclr``
    augmentation pipeline, 2 views. Source: this project's validation sweeps (see
    :attr:`source`).

    Args:
        *args: :class:`~tcl_ssl.methods.Method`'s arguments.
        temperature: TCL's ``t`` (> 0); ``None``: the setting's default.
        k1: TCL's ``k1`` (>= 0); ``None``: the setting's default.
        k2: TCL's ``k2`` (> 0); ``None``: the setting's default.
        hidden_dim: hidden width of the projection head.
        output_dim: output width of the projection head.
        **kwargs: :class:`~tcl_ssl.methods.Method`'s keyword arguments.

    Raises:
        ValueError: for a hyper-parameter or width out of range.
    """

    name = "tcl"
    with_labels = True
    defaults = TrainingDefaults(optimizer="sgd", lr=0.06, weight_decay=5e-4, warmup_epochs=1, augmentation="simclr")
    source = "this project's sweeps (docs/results/choosing-defaults.md)"
    auto_options = {"temperature": "0.1", "k1": "10 (supervised 0)", "k2": "1"}
    search_space = {"temperature": (0.1, 0.2, 0.5), "k1": (0.0, 10.0, 100.0), "k2": (1.0, 4.0)}

    @classmethod
    def resolved_options(cls, supervised: bool) -> dict[str, Any]:
        return cls.options() | (SUPERVISED_DEFAULTS if supervised else SELF_SUPERVISED_DEFAULTS)

    def __init__(
        self,
        *args: Any,
        temperature: float | None = None,
        k1: float | None = None,
        k2: float | None = None,
        hidden_dim: int = 512,
        output_dim: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_size("hidden_dim", hidden_dim)
        check_size("output_dim", output_dim)
        defaults = SUPERVISED_DEFAULTS if self.supervised else SELF_SUPERVISED_DEFAULTS
        self.criterion = TCLLoss(
            temperature=defaults["temperature"] if temperature is None else temperature,
            k1=defaults["k1"] if k1 is None else k1,
            k2=defaults["k2"] if k2 is None else k2,
            gather_distributed=True,  # a no-op in a single process
            check_inputs=False,  # the training loop's NonFiniteLossGuard watches the loss
        )
        self.projection_head = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        return self.criterion(*self.project_views(views, self.projection_head), labels=labels)
