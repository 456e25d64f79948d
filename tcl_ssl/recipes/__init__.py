"""Recipe files: YAML files of :class:`~tcl_ssl.train.PretrainConfig` fields.

``tcl-ssl pretrain --config NAME_OR_PATH`` starts from a recipe, packaged here (by name, e.g.
``paper-supervised-cifar10``) or any YAML file (by path); options given on the command line
override the file's values, and the run's ``config.json`` records the result and the recipe.
A recipe holds a mapping of ``PretrainConfig`` field names to values, plus an optional
``description``; unknown names are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

RECIPE_DIR = Path(__file__).parent


def available() -> list[str]:
    """The names of the packaged recipes."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a packaged recipe called ``name_or_path``, or ``name_or_path`` itself as a YAML file."""
    packaged = RECIPE_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise ValueError(
        f"unknown recipe {str(name_or_path)!r}: give a YAML file's path or one of {', '.join(available())}"
    )


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A recipe's ``PretrainConfig`` fields (``description`` left out), checked against the
    dataclass's field names; raises ``ValueError`` naming the file and the bad entry."""
    import yaml

    from tcl_ssl.train import PretrainConfig

    path = recipe_path(name_or_path)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"recipe {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ValueError(f"recipe {str(path)!r} must be a mapping of option names to values, got {type(content).__name__}")
    fields = {f.name for f in dataclasses.fields(PretrainConfig)} - {"recipe", "resume", "out"}
    content.pop("description", None)
    unknown = sorted(set(content) - fields)
    if unknown:
        raise ValueError(f"recipe {str(path)!r} has unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    return content


def describe_recipes() -> str:
    """One line per packaged recipe: its name and description."""
    import yaml

    lines = []
    for name in available():
        description = (yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text()) or {}).get("description", "")
        lines.append(f"{name}: {' '.join(str(description).split())}")
    return "\n".join(lines)
