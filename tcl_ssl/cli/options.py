"""Command-line flags derived from the option declarations of :mod:`tcl_ssl.config.schema`.

:func:`add_config_options` adds one flag per option (grouped as the configuration is), each
with ``default=SUPPRESS``, so that the parsed namespace holds exactly the options given on the
command line; :func:`given_options` reads them back by key, and :func:`apply_given` changes a
base configuration (defaults, a recipe, a resumed run) by them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Collection
from typing import Any, Literal, get_args, get_origin

from tcl_ssl.config import ConfigError, OptionInfo, PretrainConfig
from tcl_ssl.config.spec import describe_type, parse_assignment, parse_text

__all__ = [
    "add_config_options",
    "add_option_flag",
    "apply_given",
    "describe_options",
    "given_options",
    "mapping_keys",
    "option_flags",
]

_DEST = "option:"  # argparse destinations of options: option:<key>, option:<key>:<entry> for shortcuts


def describe_options() -> str:
    """A Markdown table of every option: group, key, flags, default and help (for the docs)."""
    lines = ["| group | option | flag | default | what |", "|---|---|---|---|---|"]
    for info in PretrainConfig.options().values():
        flags = ", ".join(f"`{f}`" for f in _flags(info)) or "-"
        shortcuts = ", ".join(f"`--{entry.replace('_', '-')}`" for entry in info.spec.shortcuts)
        if shortcuts:
            flags += f" (and {shortcuts})"
        default = _default(info)
        shown = "-" if default is None else f"`{json.dumps(default)}`"
        roles = [word for word, on in (("budget", info.spec.budget), ("sweepable", info.spec.sweep)) if on]
        what = info.spec.help.replace("|", "\\|").replace("<", "&lt;") + (f" ({', '.join(roles)})" if roles else "")
        lines.append(f"| `{info.group}` | `{info.name}` | {flags} | {shown} | {what} |")
    return "\n".join(lines)


def _flags(info: OptionInfo) -> tuple[str, ...]:
    if info.spec.flags is not None:
        return info.spec.flags
    name = info.key.replace("_", "-")
    default = _default(info)
    return (f"--no-{name}",) if default is True else (f"--{name}",)


def _default(info: OptionInfo) -> Any:
    item = next(f for f in dataclasses.fields(PretrainConfig.GROUPS[info.group]) if f.name == info.name)
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def _help(info: OptionInfo) -> str:
    if info.spec.hidden:
        return argparse.SUPPRESS
    default = _default(info)
    if default is True:  # the flag is --no-<key>
        return "do not " + info.spec.help
    if default in (None, {}, False):
        return info.spec.help
    shown = ",".join(default) if isinstance(default, list) else default
    return f"{info.spec.help} (default: {shown})"


def _converter(info: OptionInfo) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse_text(info.key, text, info.hint, info.spec)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = describe_type(info.hint)
    return convert


def add_option_flag(
    parser: argparse.ArgumentParser | Any, key: str, default: Any = None, help: str | None = None
) -> None:
    """Add the flag of the option called ``key`` to a command that shares it (``tcl-ssl eval``),
    typed and checked as the option's declaration says, with this command's ``default``
    (converted to ``args.<dest>`` as given) and ``help`` (default: the declaration's)."""
    info = PretrainConfig.option_info(key)
    choices = _choices(info.hint)
    parser.add_argument(
        *_flags(info),
        dest=key,
        type=_converter(info),
        choices=choices,
        default=default,
        metavar=info.spec.metavar or (None if choices else key.upper()),
        help=help or info.spec.help,
    )


def mapping_keys() -> list[str]:
    """The keys of the mapping options (``method_options``, ``augmentation_options``)."""
    return [key for key, info in PretrainConfig.options().items() if info.hint == dict[str, Any]]


def option_flags(exclude: Collection[str] = ()) -> list[str]:
    """Every flag :func:`add_config_options` adds (but for the options whose keys are in
    ``exclude``), shortcut flags included."""
    flags: list[str] = []
    for key, info in PretrainConfig.options().items():
        if key not in exclude:
            flags += _flags(info)
            flags += ["--" + entry.replace("_", "-") for entry in info.spec.shortcuts]
    return flags


def add_config_options(parser: argparse.ArgumentParser, exclude: Collection[str] = ()) -> None:
    """Add a flag for every option with flags (but those whose keys are in ``exclude``), in one
    argument group per configuration group, titled by the group's docstring."""
    groups: dict[str, Any] = {}
    for key, info in PretrainConfig.options().items():
        flags = _flags(info)
        if key in exclude or not flags:
            continue
        if info.group not in groups:
            title = (PretrainConfig.GROUPS[info.group].__doc__ or info.group).strip().splitlines()[0]
            groups[info.group] = parser.add_argument_group(title.rstrip("."))
        target = groups[info.group]
        dest = _DEST + key
        common: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": _help(info)}
        base = _default(info)
        if info.hint is bool:
            target.add_argument(*flags, action="store_false" if base is True else "store_true", **common)
        elif info.hint == dict[str, Any]:
            target.add_argument(*flags, action="append", metavar=info.spec.metavar or "NAME=VALUE", **common)
            for entry, shortcut in info.spec.shortcuts.items():
                target.add_argument(
                    "--" + entry.replace("_", "-"),
                    dest=f"{dest}:{entry}",
                    type=shortcut.kind,
                    metavar=entry.upper(),
                    default=argparse.SUPPRESS,
                    help=f"{shortcut.help} (sets {key}: {entry})",
                )
        else:
            choices = _choices(info.hint)
            metavar = info.spec.metavar or (None if choices else key.upper())
            target.add_argument(*flags, type=_converter(info), choices=choices, metavar=metavar, **common)


def _choices(hint: Any) -> list[Any] | None:
    """The values of a ``Literal`` type (also inside ``| None``), else ``None``."""
    arms = (hint,) if get_origin(hint) is Literal else get_args(hint)
    for arm in arms:
        if get_origin(arm) is Literal:
            return list(get_args(arm))
    return None


def given_options(namespace: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, by key; a mapping option's ``NAME=VALUE`` items
    and shortcut flags (``--k1 3``) are gathered into one mapping.

    Raises:
        ConfigError: for an item that is not ``NAME=VALUE``.
    """
    given: dict[str, Any] = {}
    shortcuts: dict[str, dict[str, Any]] = {}
    for dest, value in vars(namespace).items():
        if not dest.startswith(_DEST):
            continue
        key, _, entry = dest.removeprefix(_DEST).partition(":")
        if entry:
            shortcuts.setdefault(key, {})[entry] = value
        elif PretrainConfig.options()[key].hint == dict[str, Any]:
            flag = _flags(PretrainConfig.options()[key])[-1]
            given[key] = dict(parse_assignment(text, flag) for text in value)
        else:
            given[key] = value
    for key, entries in shortcuts.items():  # NAME=VALUE items win over shortcut flags
        given[key] = entries | given.get(key, {})
    return given


def apply_given(base: PretrainConfig, given: dict[str, Any]) -> PretrainConfig:
    """``base`` with the given options changed; mapping options merged into ``base``'s."""
    changes = dict(given)
    for key in mapping_keys():
        if key in changes:
            changes[key] = base.get(key) | changes[key]
    return base.replace(**changes)
