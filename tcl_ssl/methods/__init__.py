"""Pretraining methods: the shared :class:`Method` base, optimiser settings, the registry, TCL.

Baselines live in the top-level ``baselines`` package and are imported by name, lazily,
through :func:`method_class`. A new method is one module defining a :class:`Method` subclass
plus one line in :data:`tcl_ssl.methods.registry.METHODS`.
"""

from tcl_ssl.methods.base import Method, trains_channels_last
from tcl_ssl.methods.optim import OptimConfig
from tcl_ssl.methods.registry import available_methods, method_class

__all__ = ["Method", "OptimConfig", "available_methods", "method_class", "trains_channels_last"]
