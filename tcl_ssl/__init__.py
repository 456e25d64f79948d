"""tcl-ssl: Tuned Contrastive Learning for PyTorch."""

from tcl_ssl.loss import TCLLoss, tcl_loss

__all__ = ["TCLLoss", "tcl_loss"]
__version__ = "0.1.0"
