"""tcl-ssl: Tuned Contrastive Learning for PyTorch.

The loss is :class:`TCLLoss` (a drop-in for lightly's ``NTXentLoss``) and its functional form
:func:`tcl_loss`; :func:`load_backbone` loads a backbone written by ``tcl-ssl export``.
"""

from tcl_ssl.loss import TCLLoss, tcl_loss


def load_backbone(path, map_location="cpu"):
    """A backbone written by ``tcl-ssl export``, ready to use; see :func:`tcl_ssl.export.load_backbone`."""
    from tcl_ssl.export import load_backbone as load  # deferred: export imports the training stack (slow)

    return load(path, map_location)


__all__ = ["TCLLoss", "load_backbone", "tcl_loss"]
__version__ = "0.1.0"
