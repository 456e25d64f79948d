"""tcl-ssl: Tuned Contrastive Learning for PyTorch.

Public names: :class:`TCLLoss` (a drop-in for lightly's ``NTXentLoss``) and its functional form
:func:`tcl_loss`; TCL's relatives :class:`HCLLoss` / :func:`hcl_loss` (hard negatives) and
:class:`DebiasedLoss` / :func:`debiased_loss`; :class:`TCLPMLLoss`, the loss for pytorch-metric-learning; :func:`load_backbone`,
a backbone written by ``tcl-ssl export``; :class:`PretrainConfig` and :func:`pretrain`, a
pretraining run.

The public names are imported on first use, so that ``import tcl_ssl`` (and ``tcl-ssl --help``)
does not import torch until a name that needs it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcl_ssl.config import PretrainConfig
    from tcl_ssl.export import load_backbone
    from tcl_ssl.loss import TCLLoss, tcl_loss
    from tcl_ssl.pml import TCLPMLLoss
    from tcl_ssl.relatives import DebiasedLoss, HCLLoss, debiased_loss, hcl_loss
    from tcl_ssl.train import pretrain

#: public name -> the module that defines it
_PUBLIC = {
    "TCLLoss": "tcl_ssl.loss",
    "tcl_loss": "tcl_ssl.loss",
    "HCLLoss": "tcl_ssl.relatives",
    "hcl_loss": "tcl_ssl.relatives",
    "DebiasedLoss": "tcl_ssl.relatives",
    "debiased_loss": "tcl_ssl.relatives",
    "TCLPMLLoss": "tcl_ssl.pml",
    "load_backbone": "tcl_ssl.export",
    "PretrainConfig": "tcl_ssl.config",
    "pretrain": "tcl_ssl.train",
}

__all__ = [
    "DebiasedLoss",
    "HCLLoss",
    "PretrainConfig",
    "TCLLoss",
    "TCLPMLLoss",
    "debiased_loss",
    "hcl_loss",
    "load_backbone",
    "pretrain",
    "tcl_loss",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tcl_ssl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
