"""Recipe files: YAML files of :class:`~tcl_ssl.train.PretrainConfig` fields.

``tcl-ssl pretrain --config NAME_OR_PATH`` starts from a recipe, packaged here (by name, e.g.
``paper-supervised-cifar10``) or any YAML file (by path); options given on the command line
override the file's values, and the run's ``config.json`` records the result and the recipe.
A recipe holds a mapping of ``PretrainConfig`` field names to values, plus an optional
``description``; unknown names are refused. ``extends: OTHER`` (a packaged name, or a path
relative to the file) starts from another recipe: the file's values override OTHER's, and its
``method_options`` / ``augmentation_options`` are merged into OTHER's (a file that names another
method than OTHER's inherits only the method options its method takes). A comparison's budget lives
in one file that each method's recipe extends (``cpu-small-ssl-tcl`` extends ``cpu-small-ssl``).
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


#: recipe fields whose mappings an extending recipe merges into its parent's
_MERGED = ("method_options", "augmentation_options")


def load_recipe(name_or_path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's ``PretrainConfig`` fields (``description`` left out, ``extends`` resolved),
    checked against the dataclass's field names; raises ``ValueError`` naming the file and the
    bad entry."""
    import yaml

    from tcl_ssl.train import PretrainConfig

    path = recipe_path(name_or_path).resolve()
    if path in _chain:
        raise ValueError(f"recipe {str(path)!r} extends itself through {' -> '.join(map(str, _chain))}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"recipe {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ValueError(
            f"recipe {str(path)!r} must be a mapping of option names to values, got {type(content).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(PretrainConfig)} - {"recipe", "resume", "out"}
    content.pop("description", None)
    parent_name = content.pop("extends", None)
    unknown = sorted(set(content) - fields)
    if unknown:
        raise ValueError(
            f"recipe {str(path)!r} has unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    if parent_name is None:
        return content
    relative = path.parent / str(parent_name)
    parent = load_recipe(relative if relative.is_file() else parent_name, _chain + (path,))
    inherited = dict(parent)
    if (
        "method" in content
        and content["method"] != parent.get("method")
        and isinstance(parent.get("method_options"), dict)
    ):
        # the parent's method options belong to its method: keep those the new method takes
        from tcl_ssl.methods import method_class

        accepted = method_class(content["method"]).options()
        inherited["method_options"] = {k: v for k, v in parent["method_options"].items() if k in accepted}
    merged = inherited | content
    for name in _MERGED:
        if isinstance(inherited.get(name), dict) and isinstance(content.get(name), dict):
            merged[name] = inherited[name] | content[name]
    return merged


def describe_recipes() -> str:
    """One line per packaged recipe: its name and description."""
    import yaml

    lines = []
    for name in available():
        description = (yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text()) or {}).get("description", "")
        lines.append(f"{name}: {' '.join(str(description).split())}")
    return "\n".join(lines)
