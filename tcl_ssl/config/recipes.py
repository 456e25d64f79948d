"""Recipe files: YAML files of run options, packaged with tcl-ssl (by name) or anywhere (by path).

A recipe is a mapping of options, grouped as in ``config.json`` (``optim: {epochs: 100}``) or by
flat key (``epochs: 100``), plus three optional entries of its own:

- ``description``: one paragraph, listed by ``tcl-ssl pretrain --list-recipes``;
- ``extends: OTHER``: start from another recipe (a packaged name, or a path relative to this
  file); this file's values override OTHER's, and its mapping options (``method_options``,
  ``augmentation_options``) are merged into OTHER's. A file that names another method than
  OTHER's inherits only the method options its own method takes;
- ``requires: [KEY, ...]``: options the command line must give (e.g. ``dataset`` for a recipe
  that fixes a budget but not where the images are).

``tcl-ssl pretrain --config NAME_OR_PATH`` starts from a recipe; options given on the command
line override it. Nothing here imports torch unless a recipe changes the method of the recipe it
extends.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcl_ssl.config.schema import PretrainConfig
from tcl_ssl.config.spec import ConfigError, check_value

__all__ = ["RECIPE_DIR", "Recipe", "available", "describe_recipes", "load_recipe", "recipe_exists", "recipe_path"]

#: where the packaged recipes live
RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"

#: a recipe's own entries, which are not run options
_OWN = ("description", "extends", "requires")


class Recipe:
    """A loaded recipe: its file, its options by flat key (``extends`` resolved) and the options
    it requires from the command line.

    Attributes:
        path: the recipe file.
        options: ``{key: value}``, as written (checked when turned into a configuration).
        requires: keys the command line must give.
    """

    def __init__(self, path: Path, options: dict[str, Any], requires: tuple[str, ...]) -> None:
        self.path = path
        self.options = options
        self.requires = requires

    def config(self, **given: Any) -> PretrainConfig:
        """The recipe's configuration with the ``given`` options (by key) changed, checked.

        Raises:
            ConfigError: for a required option not given, or a bad value (naming the file).
        """
        missing = [key for key in self.requires if key not in given]
        if missing:
            flags = ", ".join("--" + key.replace("_", "-") for key in missing)
            raise ConfigError(f"recipe {str(self.path)!r} needs {flags} on the command line")
        options = merge_options(self.options, given)
        return PretrainConfig.from_dict(options | {"recipe": str(self.path)}, where=f"recipe {str(self.path)!r}")


def available() -> list[str]:
    """The names of the packaged recipes."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def recipe_exists(name_or_path: str | Path) -> bool:
    """Whether :func:`recipe_path` finds ``name_or_path``."""
    try:
        recipe_path(name_or_path)
    except ConfigError:
        return False
    return True


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of the packaged recipe called ``name_or_path``, or ``name_or_path`` as a file
    (``.yaml`` may be left out).

    Raises:
        ConfigError: if neither exists, listing the packaged names.
    """
    path = Path(name_or_path).expanduser()
    packaged = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_absolute() and packaged.is_file():
        return packaged
    for candidate in (path, path.with_name(path.name + ".yaml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"unknown recipe {str(name_or_path)!r}: give a YAML file's path or one of {', '.join(available())}"
    )


def _mapping_keys() -> set[str]:
    return {key for key, info in PretrainConfig.options().items() if info.hint == dict[str, Any]}


def merge_options(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``parent`` overridden by ``child`` (flat keys); the mapping options merged entry by entry."""
    merged = dict(parent) | dict(child)
    for key in _mapping_keys():
        if isinstance(parent.get(key), Mapping) and isinstance(child.get(key), Mapping):
            merged[key] = dict(parent[key]) | dict(child[key])
    return merged


def _flat_options(content: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A recipe's mapping with groups flattened to keys and older names mapped to keys, each
    value checked against its option's declaration (so that a bad value names this file).

    Raises:
        ConfigError: naming ``where``, the option, the value and what is allowed."""
    flat: dict[str, Any] = {}
    for name, value in content.items():
        if name in PretrainConfig.GROUPS and isinstance(value, Mapping):
            group = PretrainConfig.GROUPS[name]
            for field_name, field_value in value.items():
                info = next(
                    (i for i in PretrainConfig.options().values() if i.group == name and i.name == field_name), None
                )
                if info is None:
                    fields = [i.name for i in PretrainConfig.options().values() if i.group == name]
                    raise ConfigError(
                        f"{where} has unknown option {field_name!r} in group {name!r} ({group.__name__}); "
                        f"allowed: {', '.join(fields)}"
                    )
                flat[info.key] = field_value
        else:
            try:
                flat[PretrainConfig.option_info(name).key] = value
            except ConfigError:
                allowed = ", ".join(k for k in PretrainConfig.options() if k not in ("out", "resume", "recipe"))
                raise ConfigError(f"{where} has unknown option(s) {name}; allowed: {allowed}") from None
    for key in ("out", "resume", "recipe"):
        if key in flat:
            raise ConfigError(f"{where} sets {key!r}, which belongs to a run, not a recipe")
    options = PretrainConfig.options()
    try:
        return {key: check_value(key, value, options[key].hint, options[key].spec) for key, value in flat.items()}
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_recipe(name_or_path: str | Path, _chain: tuple[Path, ...] = ()) -> Recipe:
    """A recipe by packaged name or path, with ``extends`` resolved.

    Raises:
        ConfigError: naming the file, for invalid YAML, a non-mapping, an unknown option, a
            cycle of ``extends`` or an unknown parent.
    """
    import yaml  # PyYAML is imported only when a recipe is read

    from tcl_ssl.config.yaml12 import load_yaml  # (imports PyYAML: only when a recipe is read)

    path = recipe_path(name_or_path).resolve()
    where = f"recipe {str(path)!r}"
    if path in _chain:
        raise ConfigError(f"{where} extends itself through {' -> '.join(map(str, _chain))}")
    try:
        content = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{where} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{where} must be a mapping of option names to values, got {type(content).__name__}")
    parent_name = content.get("extends")
    requires = content.get("requires") or []
    if not isinstance(requires, list) or not all(isinstance(k, str) for k in requires):
        raise ConfigError(f"{where}: requires must be a list of option names, got {requires!r}")
    options = _flat_options({k: v for k, v in content.items() if k not in _OWN}, where)
    try:
        required = tuple(PretrainConfig.option_info(key).key for key in requires)
    except ConfigError as error:
        raise ConfigError(f"{where}: requires {error}") from None
    if parent_name is None:
        return Recipe(path, options, required)
    if not isinstance(parent_name, str):
        raise ConfigError(f"{where}: extends must be a recipe's name or path, got {parent_name!r}")
    relative = path.parent / parent_name
    parent = load_recipe(relative if relative.is_file() else parent_name, (*_chain, path))
    inherited = dict(parent.options)
    method = options.get("method")
    if method is not None and method != inherited.get("method") and isinstance(inherited.get("method_options"), dict):
        # the parent's method options belong to its method: keep those the new method takes.
        # Method classes import torch, so the registry is imported only here.
        from tcl_ssl.methods import method_class

        accepted = method_class(method).options()
        inherited["method_options"] = {k: v for k, v in inherited["method_options"].items() if k in accepted}
    # what this file sets, it no longer requires from the command line
    requires_all = tuple(key for key in dict.fromkeys(parent.requires + required) if key not in options)
    return Recipe(path, merge_options(inherited, options), requires_all)


def describe_recipes() -> str:
    """One line per packaged recipe: its name and description."""
    from tcl_ssl.config.yaml12 import load_yaml  # PyYAML is imported only when recipes are read

    lines = []
    for name in available():
        description = (load_yaml((RECIPE_DIR / f"{name}.yaml").read_text()) or {}).get("description", "")
        lines.append(f"{name}: {' '.join(str(description).split())}")
    return "\n".join(lines)
