"""Declaring an option once: :func:`option` attaches an :class:`OptionSpec` to a dataclass field,
and the helpers here read a field's type hint to check and convert values from a recipe file, a
``config.json`` or the command line.

Supported types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``list[str]``,
``dict[str, Any]``, ``int | str`` and any of them ``| None``. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

__all__ = [
    "ConfigError",
    "OptionSpec",
    "Shortcut",
    "check_value",
    "describe_type",
    "option",
    "parse_assignment",
    "parse_text",
    "spec_of",
]


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the option, the value and
    what is allowed."""


@dataclass(frozen=True)
class Shortcut:
    """A flag that sets one entry of a mapping option, e.g. ``--k1 10`` for ``method_options["k1"]``.

    Attributes:
        help: the flag's help text.
        kind: the entry's type (``float``, ``int`` or ``str``).
    """

    help: str
    kind: type = float


@dataclass(frozen=True)
class OptionSpec:
    """What the rest of the project derives from one option's declaration.

    Attributes:
        help: one line for ``--help`` and the documentation.
        key: the option's flat name, unique over all groups (default: the field's name). Recipe
            files and ``config.json`` may use it without the group; ``--grid``, ``compare``'s
            messages and :meth:`~tcl_ssl.config.PretrainConfig.replace` use it.
        flags: the command-line spellings (default: ``--key-with-dashes``; ``--no-key`` for a
            boolean that defaults to true); empty for an option with no flag.
        aliases: older keys that recipe files and ``config.json`` may still use.
        minimum: the smallest allowed number (inclusive), if any.
        exclusive_minimum: numbers must be greater than this, if set.
        maximum: the largest allowed number (inclusive), if any.
        choices: the allowed texts (for a list option: of each item), if limited.
        check: called with the value once its type is right; returns it (normalised where
            needed) or raises ``ValueError`` saying what is allowed (the option's name and the
            value are added to the message).
        budget: part of a comparison's budget: every method of ``tcl-ssl compare`` must share it.
        sweep: ``tcl-ssl sweep --grid`` may vary it.
        affects_results: whether it can change a run's figures; a finished run is reused for a
            planned run that differs from it only in options that cannot.
        shortcuts: for a mapping option, flags that set one entry each.
        parse: converts the command line's text, where the type's own conversion does not fit.
        hidden: left out of ``--help``.
        metavar: the value's name in ``--help``.
    """

    help: str
    key: str = ""
    flags: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    budget: bool = False
    sweep: bool = False
    affects_results: bool = True
    shortcuts: Mapping[str, Shortcut] = field(default_factory=dict)
    parse: Callable[[str], Any] | None = None
    hidden: bool = False
    metavar: str | None = None


_SPEC = "tcl_ssl.option"


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | None = None,
    **spec: Any,
) -> Any:
    """A dataclass field carrying its :class:`OptionSpec` (keyword arguments as its attributes).

    Args:
        default: the field's default value.
        help: one line of help.
        default_factory: for a mutable default (list, dict), as in :func:`dataclasses.field`.
        **spec: the other :class:`OptionSpec` attributes.

    Returns:
        A :func:`dataclasses.field` to assign in the class body.
    """
    metadata = {_SPEC: OptionSpec(help=help, **spec)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def spec_of(item: dataclasses.Field) -> OptionSpec:
    """The :class:`OptionSpec` of a field declared with :func:`option`, its ``key`` filled in."""
    spec = item.metadata.get(_SPEC)
    if spec is None:
        raise TypeError(f"field {item.name!r} was not declared with option()")
    return spec if spec.key else dataclasses.replace(spec, key=item.name)


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    """``(hint without None, whether None is allowed)``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        return (args[0] if len(args) == 1 else Union[tuple(args)]), optional  # noqa: UP007
    return hint, False


def describe_type(hint: Any) -> str:
    """The allowed values of a type, in words (for messages and ``--help``)."""
    base, optional = _strip_optional(hint)
    origin = get_origin(base)
    if origin is Literal:
        words = ", ".join(repr(a) for a in get_args(base))
        text = f"one of {words}"
    elif origin in (Union, types.UnionType):
        text = " or ".join(describe_type(a) for a in get_args(base))
    elif origin is list:
        item = get_args(base)[0]
        text = "a list of " + {bool: "booleans", int: "integers", float: "numbers", str: "texts"}.get(item, str(item))
    elif origin is dict or base is dict:
        text = "a mapping of names to values"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}.get(base, str(base))
    return text + (" or null" if optional else "")


def check_value(key: str, value: Any, hint: Any, spec: OptionSpec | None = None) -> Any:
    """``value`` checked against the type ``hint`` and the limits of ``spec`` (minimum,
    maximum, choices, check), converted where that is lossless (an integer for a number; a
    tuple for a list; a path for a text). A text is never read as a number or a boolean here:
    the command line converts its texts first (:func:`parse_text`), and recipe files are read
    with YAML 1.2's types.

    Raises:
        ConfigError: naming ``key``, the value and what is allowed.
    """
    base, optional = _strip_optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must be {describe_type(hint)}, got None")
    checked = _check_type(key, value, base, hint)
    if spec is None:
        return checked
    if isinstance(checked, (int, float)) and not isinstance(checked, bool):
        if spec.minimum is not None and checked < spec.minimum:
            raise ConfigError(f"{key} must be {describe_type(base)} >= {_number(spec.minimum)}, got {value!r}")
        if spec.exclusive_minimum is not None and not checked > spec.exclusive_minimum:
            raise ConfigError(f"{key} must be {describe_type(base)} > {_number(spec.exclusive_minimum)}, got {value!r}")
        if spec.maximum is not None and checked > spec.maximum:
            raise ConfigError(f"{key} must be {describe_type(base)} <= {_number(spec.maximum)}, got {value!r}")
    if spec.choices is not None:
        items = checked if isinstance(checked, list) else [checked]
        if not items or any(item not in spec.choices for item in items):
            what = "a non-empty subset of" if isinstance(checked, list) else "one of"
            raise ConfigError(f"{key} must be {what} {', '.join(spec.choices)}; got {value!r}")
    if spec.check is not None:
        try:
            checked = spec.check(checked)
        except ValueError as error:
            raise ConfigError(f"{key} must be {error}; got {value!r}") from None
    return checked


def _number(bound: float) -> str:
    """A limit as written: ``4294967295``, not ``4.29497e+09``."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _check_type(key: str, value: Any, base: Any, hint: Any) -> Any:
    def refuse() -> typing.NoReturn:
        raise ConfigError(f"{key} must be {describe_type(hint)}, got {value!r}")

    origin = get_origin(base)
    if origin is Literal:
        if value not in get_args(base) or isinstance(value, bool) != any(isinstance(a, bool) for a in get_args(base)):
            refuse()
        return value
    if origin in (Union, types.UnionType):
        for arm in get_args(base):
            try:
                return _check_type(key, value, arm, arm)
            except ConfigError:
                continue
        refuse()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            refuse()
        (item,) = get_args(base)
        return [_check_type(f"{key}[{i}]", v, item, item) for i, v in enumerate(value)]
    if origin is dict or base is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            refuse()
        return dict(value)
    if base is bool:
        if not isinstance(value, bool):
            refuse()
        return value
    if base is int:  # numpy's integers too; never a boolean
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            refuse()
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            refuse()
        return float(value)
    if base is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            refuse()
        return value
    raise TypeError(f"option {key}: unsupported type {hint!r}")


def parse_text(key: str, text: str, hint: Any, spec: OptionSpec | None = None) -> Any:
    """A command-line text converted to the option's type (``spec.parse`` where given; a
    comma-separated list for a list; an integer where an ``int | str`` option's text is one)
    and checked as :func:`check_value` checks it.

    Raises:
        ConfigError: naming the option, the text and what is allowed.
    """
    return check_value(key, _convert_text(key, text, hint, spec), hint, spec)


def _convert_text(key: str, text: str, hint: Any, spec: OptionSpec | None) -> Any:
    if spec is not None and spec.parse is not None:
        try:
            return spec.parse(text)
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(f"{key} must be {error}; got {text!r}") from None
    base, _ = _strip_optional(hint)
    origin = get_origin(base)
    if origin is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if origin in (Union, types.UnionType):
        arms = get_args(base)
        if int in arms and text.strip().lstrip("-").isdigit():
            return int(text)
        return text
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {text!r}") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {text!r}") from None
    return text


def parse_assignment(text: str, what: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> ``(name, value)``, the value read as JSON (number, boolean, null) where
    it reads as one, else kept as text.

    Raises:
        ConfigError: if ``text`` has no ``=`` or no name.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{what} must be NAME=VALUE, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value
