"""Pretraining methods by name; baselines are imported lazily, only when asked for."""

from __future__ import annotations

import importlib

from tcl_ssl.methods.base import Method

#: name -> "module:Class", in the order of :func:`available_methods`. tcl_ssl knows the
#: baselines only through this table.
METHODS: dict[str, str] = {
    "tcl": "tcl_ssl.methods.tcl:TCL",
    "simclr": "baselines.simclr:SimCLR",
    "moco": "baselines.moco:MoCo",
    "moco-tcl": "baselines.moco_tcl:MoCoTCL",
    "byol": "baselines.byol:BYOL",
    "mocov3": "baselines.mocov3:MoCoV3",
    "nnclr": "baselines.nnclr:NNCLR",
    "vicreg": "baselines.vicreg:VICReg",
    "barlowtwins": "baselines.barlowtwins:BarlowTwins",
    "dino": "baselines.dino:DINO",
    "swav": "baselines.swav:SwAV",
    "dcl": "baselines.dcl:DCL",
    "dclw": "baselines.dcl:DCLW",
    "hcl": "baselines.hcl:HCL",
    "debiased": "baselines.debiased:Debiased",
    "supcon": "baselines.supcon:SupCon",
    "ce": "baselines.ce:CrossEntropy",
}


def available_methods() -> list[str]:
    """Registered method names, in the table's order (TCL first, then the baselines).

    Example:
        >>> from tcl_ssl.methods import available_methods
        >>> available_methods()[0]
        'tcl'
    """
    return list(METHODS)


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered under ``name``, imported on first use.

    Args:
        name: one of :func:`available_methods`.

    Returns:
        The class (not an instance); its ``name`` is ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> from tcl_ssl.methods import method_class
        >>> cls = method_class("simclr")
        >>> cls.__name__, cls.with_labels, cls.defaults.augmentation
        ('SimCLR', False, 'simclr')
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def describe_methods() -> str:
    """A Markdown table of every method: settings, options and their defaults, training
    defaults, augmentation pipeline, the values its tuning search tries (:attr:`Method.search_space`)
    and source.

    The documentation's methods page shows this table (generated when the site is built);
    ``tcl-ssl pretrain --list-methods`` prints it.
    """
    lines = [
        "| method | trains | hyper-parameters (`-o NAME=VALUE`) | optimiser, lr at 256, weight decay, warm-up epochs "
        "| augmentation, views | searched by `tcl-ssl tune` (besides lr) | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in available_methods():
        cls = method_class(name)
        settings = [s for s, ok in (("self-supervised", cls.without_labels), ("supervised", cls.with_labels)) if ok]
        options = (
            ", ".join(
                f"{key}={cls.auto_options.get(key, 'auto') if value is None else _format(value)}"
                for key, value in cls.options().items()
            )
            or "-"
        )
        d = cls.defaults
        optimiser = f"{d.optimizer.upper()}, {_format(d.lr)}, {_format(d.weight_decay)}, {d.warmup_epochs}"
        searched = "; ".join(
            f"{knob} {', '.join(_format(v) for v in values)}" for knob, values in cls.search_space.items()
        )
        lines.append(
            f"| `{name}` | {' + '.join(settings)} | {options} | {optimiser} | `{d.augmentation}`, {d.num_views} "
            f"| {searched or '-'} | {cls.source} |"
        )
    return "\n".join(lines)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
