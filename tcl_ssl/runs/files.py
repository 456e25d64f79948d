"""Writing the files of a run directory so that a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json", "write_text"]


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, flushed to disk, then
    renamed over ``path``, so that readers see the old file or the new one, never a part.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: naming the file, if it cannot be written (the old file, if any, is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        Path(partial).unlink(missing_ok=True)
        raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from None
    return path


def read_json(path: Path) -> Any:
    """The JSON content of the file at ``path``.

    Raises:
        ValueError: naming the file, if it is not valid JSON (a damaged or foreign file).
    """
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file is damaged or not tcl-ssl's") from None


def write_json(path: str | Path, content: Any) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically (see :func:`write_text`)."""
    return write_text(path, json.dumps(content, indent=2))
