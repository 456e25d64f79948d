"""Reading and writing the JSON files of a run directory; writes are atomic (:mod:`tcl_ssl.safe_io`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tcl_ssl.safe_io import write_json, write_text

__all__ = ["read_json", "write_json", "write_text"]


def read_json(path: Path) -> Any:
    """The JSON content of the file at ``path``.

    Raises:
        ValueError: naming the file, if it is not valid JSON (a damaged or foreign file).
    """
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file is damaged or not tcl-ssl's") from None
