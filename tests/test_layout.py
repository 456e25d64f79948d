"""The layers of DESIGN.md, checked on the source: baselines -> tcl_ssl -> augmentations, never back;
the library never imports the command line or the experiment and benchmark tooling; no module
imports another's private name; no import cycles; function-level imports carry their reason."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import augmentations
import baselines
import tcl_ssl

ROOT = Path(__file__).parent.parent
PACKAGES = ("tcl_ssl", "augmentations", "baselines")
#: the parts of tcl_ssl that are tools around the library, not the library
TOOLING = ("tcl_ssl.cli", "tcl_ssl.experiments", "tcl_ssl.bench")


def _modules(package) -> list[str]:
    return [package.__name__] + [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def _path(module: str) -> Path:
    base = ROOT / module.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(node: ast.ImportFrom, module: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    package = parts if _path(module).name == "__init__.py" else parts[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, list[str], ast.stmt, bool]]:
    """``(imported module, names, node, at import time)`` for every import of ``module``; at import
    time: at module level or under ``if TYPE_CHECKING:`` (which never runs)."""
    tree = ast.parse(_path(module).read_text())
    eager = set(map(id, tree.body))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            eager |= set(map(id, node.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node, id(node) in eager) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((_resolve(node, module), [a.name for a in node.names], node, id(node) in eager))
    return found


ALL_MODULES = [m for package in (tcl_ssl, augmentations, baselines) for m in _modules(package)]
LIBRARY = [m for m in ALL_MODULES if not m.startswith(TOOLING)]


@pytest.mark.parametrize(
    "package,forbidden",
    [(augmentations, {"tcl_ssl", "baselines"}), (tcl_ssl, {"baselines"})],
    ids=["augmentations", "tcl_ssl"],
)
def test_packages_do_not_import_upstream(package, forbidden):
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in _modules(package))
    code += "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert package.__name__ in loaded
    assert not loaded & forbidden


def test_the_library_never_imports_the_command_line_or_the_tooling():
    offences = [
        f"{module} imports {target}"
        for module in LIBRARY
        for target, _, _, _ in _imports(module)
        if target.startswith(TOOLING)
    ]
    assert not offences, offences


def test_no_module_imports_another_modules_private_name():
    offences = [
        f"{module} imports {name} from {target}"
        for module in ALL_MODULES
        for target, names, _, _ in _imports(module)
        if _is_project(target) and target != module
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offences, offences


def _graph() -> dict[str, set[str]]:
    known = set(ALL_MODULES)
    graph: dict[str, set[str]] = {m: set() for m in ALL_MODULES}
    for module in ALL_MODULES:
        for target, names, _, _ in _imports(module):
            if not _is_project(target):
                continue
            submodules = {f"{target}.{n}" for n in names} & known
            for dependency in submodules or {target}:
                if dependency in known and dependency != module:
                    graph[module].add(dependency)
    return graph


def test_no_import_cycles_between_modules():
    """A package's ``__init__`` re-exporting its modules is not a cycle; modules of a package
    importing each other in a circle (directly or through the package) is."""
    graph = _graph()
    for module, dependencies in graph.items():
        if _path(module).name == "__init__.py":  # the package's re-exports point down, by design
            continue
        graph[module] = {d for d in dependencies if not module.startswith(d + ".") or _path(d).name != "__init__.py"}
    cycles, state = [], dict.fromkeys(graph, 0)

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    real = [c for c in cycles if not all(_path(m).name == "__init__.py" for m in c[:-1])]
    assert not real, real


def test_function_level_imports_say_why():
    """An import inside a function is for an optional dependency or start-up time; the line (or
    the one above it) says so in a comment."""
    offences = []
    for module in ALL_MODULES:
        path = _path(module)
        lines = path.read_text().splitlines()
        for _, _, node, top in _imports(module):
            if top:
                continue
            here, above = lines[node.lineno - 1], node.lineno - 2
            while above > 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1  # a block of imports shares the comment above it
            if "#" not in here and not lines[above].strip().startswith("#"):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {here.strip()}")
    assert not offences, "\n".join(offences)


def test_every_module_and_every_public_name_is_documented():
    """Each module has a docstring, and so has every function and class it lists in ``__all__``."""
    missing = []
    for module in ALL_MODULES:
        if module.endswith("__main__"):
            continue
        loaded = importlib.import_module(module)
        if not (loaded.__doc__ or "").strip():
            missing.append(module)
        for name in getattr(loaded, "__all__", []):
            value = getattr(loaded, name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and not (value.__doc__ or "").strip():
                missing.append(f"{module}.{name}")
    assert not missing, missing
