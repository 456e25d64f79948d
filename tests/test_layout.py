"""The dependency direction of DESIGN.md: baselines -> tcl_ssl -> augmentations, never back."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import augmentations
import tcl_ssl


def _modules(package) -> list[str]:
    return [package.__name__] + [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "package,forbidden",
    [(augmentations, {"tcl_ssl", "baselines"}), (tcl_ssl, {"baselines"})],
    ids=["augmentations", "tcl_ssl"],
)
def test_packages_do_not_import_upstream(package, forbidden):
    loaded = _loaded_after_importing(_modules(package))
    assert package.__name__ in loaded
    assert not loaded & forbidden
