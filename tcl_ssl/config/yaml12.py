"""Reading YAML with the types of YAML 1.2's core schema, which PyYAML (YAML 1.1) does not:
only ``true``/``false`` are booleans (``yes``, ``no``, ``on``, ``off`` stay texts, so that a
recipe's ``supervised: no`` is refused rather than read as false), ``1e-4`` is a number (1.1
leaves it a text), ``010`` is ten (not octal eight), ``1:30`` is a text (not ninety) and dates
stay texts.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

__all__ = ["load_yaml"]

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")

_TAG = "tag:yaml.org,2002:"


class _Core12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core schema resolvers for null, bool, int and float."""


_Core12Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in {_TAG + t for t in ("bool", "int", "float", "null", "timestamp")}
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Core12Loader.add_implicit_resolver(_TAG + "bool", _BOOL, list("tTfF"))
_Core12Loader.add_implicit_resolver(_TAG + "int", _INT, list("-+0123456789"))
_Core12Loader.add_implicit_resolver(_TAG + "float", _FLOAT, list("-+0123456789."))
_Core12Loader.add_implicit_resolver(_TAG + "null", _NULL, ["~", "n", "N", ""])


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text == ".nan":
        return math.nan
    return float(text)


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


_Core12Loader.add_constructor(_TAG + "int", _int)
_Core12Loader.add_constructor(_TAG + "float", _float)
_Core12Loader.add_constructor(_TAG + "bool", _bool)


def load_yaml(text: str) -> Any:
    """The content of a YAML document, typed as YAML 1.2's core schema types it.

    Raises:
        yaml.YAMLError: for text that is not YAML.
    """
    return yaml.load(text, Loader=_Core12Loader)  # noqa: S506 - a SafeLoader subclass
