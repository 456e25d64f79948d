"""Pretraining methods by name; baselines are imported lazily, only when asked for."""

from __future__ import annotations

import importlib

from tcl_ssl.methods.base import Method

#: name -> "module:Class". tcl_ssl knows the baselines only through this table.
METHODS: dict[str, str] = {
    "tcl": "tcl_ssl.methods.tcl:TCL",
}


def available_methods() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered under ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
