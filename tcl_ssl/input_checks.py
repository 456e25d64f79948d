"""Checks of what the loss API (:mod:`tcl_ssl.loss`, :mod:`tcl_ssl.pml`,
:mod:`tcl_ssl.memory_bank`) is given, and the stable L2 normalisation its losses share.

Each check raises ``ValueError`` naming the argument, the value and what is allowed.
Hyper-parameters are Python or numpy numbers (never booleans, texts or ``None``); tensors
must hold data (not ``meta``), agree on their device, and have at least one row and one
column.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "check_count",
    "check_embeddings",
    "check_flag",
    "check_ids",
    "check_number",
    "check_same_device",
    "scaled",
    "stable_normalize",
]


def check_number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a float: a finite Python or numpy number, not a boolean, ``> 0`` with
    ``positive`` and ``>= minimum`` where given.

    Raises:
        ValueError: naming ``name``, the value and what is allowed.
    """
    bound = " > 0" if positive else (f" >= {minimum:g}" if minimum is not None else "")
    if isinstance(value, (bool, torch.Tensor)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number{bound} (a Python or numpy number), got {value!r}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0) or (minimum is not None and number < minimum):
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int: a Python or numpy integer (not a boolean) ``>= minimum``.

    Raises:
        ValueError: naming ``name``, the value and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a bool: ``True`` or ``False`` (numpy's too), never a text or a number.

    Raises:
        ValueError: naming ``name`` and the value.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_data(name: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device (no data): move it to a real device first")


def check_embeddings(name: str, x: Any, check_finite: bool = True) -> None:
    """``x`` is a floating-point ``(N, D)`` tensor with data, ``N >= 1`` and ``D >= 1``, and
    (with ``check_finite``) no NaN or inf.

    Raises:
        ValueError: naming ``name`` and what is wrong.
    """
    _check_data(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (N, D) tensor, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}): the loss needs at least one row")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero-width embeddings (shape {tuple(x.shape)}): D must be >= 1")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    if check_finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_ids(name: str, ids: Any, length: int, match: str = "the embeddings") -> None:
    """``ids`` is a ``(length,)`` integer tensor with data (labels, group ids, indices);
    ``match`` names what ``length`` comes from, for the message.

    Raises:
        ValueError: naming ``name`` and what is wrong.
    """
    _check_data(name, ids)
    if ids.ndim != 1 or ids.numel() != length:
        raise ValueError(f"{name} must have shape ({length},) to match {match}, got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {ids.dtype}")


def check_keys(embeddings: Tensor, keys: Any, key_groups: Any, self_index: Any, check_finite: bool = True) -> None:
    """The keys of a contrastive loss, against its ``(N, D)`` anchor ``embeddings``: ``keys`` a
    floating ``(M, D)`` tensor with its ``(M,)`` ``key_groups``, and ``self_index`` ``(N,)``
    columns ``< M`` of each anchor's own key (or ``-1``); without keys, neither of the others.

    Raises:
        ValueError: naming the argument and what is wrong.
    """
    if keys is None:
        if key_groups is not None or self_index is not None:
            raise ValueError("key_groups and self_index are only allowed together with keys")
    else:
        check_embeddings("keys", keys, check_finite)
        if keys.shape[1] != embeddings.shape[1]:
            raise ValueError(f"keys have dimension {keys.shape[1]} but embeddings have {embeddings.shape[1]}")
        if key_groups is None:
            raise ValueError("key_groups is required when keys are given")
        check_ids("key_groups", key_groups, keys.shape[0])
        if self_index is not None:
            check_ids("self_index", self_index, embeddings.shape[0])
            if self_index.numel() and int(self_index.max()) >= keys.shape[0]:
                raise ValueError(
                    f"self_index values must be < the number of keys ({keys.shape[0]}), got max {int(self_index.max())}"
                )


def check_same_device(**tensors: Any) -> None:
    """Every given value is ``None`` or a tensor, and the tensors are on one device.

    Raises:
        ValueError: naming an argument that is not a tensor and its type, or the tensors
            and their devices.
    """
    devices = {}
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        devices[name] = t.device
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"the inputs must be on one device, got {where}")


def scaled(x: Tensor) -> Tensor:
    """Each row of ``x`` (``(N, D)``, floating) divided by its largest absolute value
    (detached; zero rows kept): the same directions, with norms that can be computed
    without overflow or underflow."""
    if x.shape[1] == 0:
        return x
    scale = x.detach().abs().amax(dim=1, keepdim=True)
    return x / torch.where(scale > 0, scale, torch.ones_like(scale))


def stable_normalize(x: Tensor) -> Tensor:
    """Rows of ``x`` (``(N, D)``, floating) scaled to unit L2 norm without overflow or
    underflow: each row is first :func:`scaled` (so the gradient is that of
    ``F.normalize``), so any finite row gives its direction (a zero row stays zero)."""
    return F.normalize(scaled(x), dim=1)
