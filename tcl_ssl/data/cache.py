"""The image cache: decoded image folders kept as torch files between runs.

A cache entry is only ever a convenience, so neither reading nor writing one stops a run:

- :func:`read_cache` verifies an entry (the archive's CRCs, then its keys) before use; a damaged
  or unreadable entry is deleted with a warning naming it, and the caller decodes the images
  again (and writes a fresh entry);
- :func:`write_cache` writes an entry atomically (:func:`tcl_ssl.safe_io.save_torch`); when it
  cannot (a full disk, no permission) it warns, naming the file, and the run goes on with the
  images in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from tcl_ssl.safe_io import DamagedFileError, WriteError, check_archive, error_line, save_torch

__all__ = ["read_cache", "write_cache"]

log = logging.getLogger(__name__)


def read_cache(path: Path, keys: Iterable[str]) -> dict[str, Tensor] | None:
    """The tensors of the cache entry at ``path`` (a dict with at least ``keys``, each a tensor),
    or ``None`` when there is no usable entry: none yet, or one that is damaged or unreadable,
    which is then deleted with a warning naming it."""
    if not path.exists():
        return None
    try:
        content = torch.load(check_archive(path), map_location="cpu", weights_only=True)
        missing = [key for key in keys if not isinstance(content, dict) or not isinstance(content.get(key), Tensor)]
        if missing:
            raise ValueError(f"it lacks the tensors {missing}")
    except DamagedFileError as error:
        _discard(path, error.problem)
        return None
    except Exception as error:  # whole but unreadable: a foreign file, an unpickling error, EACCES
        _discard(path, f"cannot be read ({error_line(error)})")
        return None
    return content


def _discard(path: Path, problem: str) -> None:
    """Delete a bad cache entry, warning that it is rebuilt."""
    try:
        path.unlink(missing_ok=True)
        done = "deleted it; decoding the images again"
    except OSError as error:
        done = f"could not delete it ({error.strerror or error}); decoding the images again"
    log.warning("the image cache file %r %s: %s", str(path), problem, done)
    return None


def write_cache(path: Path, content: dict[str, Tensor]) -> bool:
    """Save ``content`` at ``path`` atomically; ``False``, with a warning naming the file, its
    directory and why, when it cannot be written (the run goes on without the cache)."""
    try:
        save_torch(content, path)
    except WriteError as error:
        log.warning("%s; going on with the images in memory (they will be decoded again next run)", error)
        return False
    return True
