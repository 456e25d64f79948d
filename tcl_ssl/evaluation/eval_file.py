"""A run's ``eval.json``: the figures of ``tcl-ssl eval``, one entry per weights and dataset.

Layout (version 2)::

    {"format": "tcl-ssl-eval", "version": 2,
     "entries": {"<dataset>@<weights_sha256[:16]>": {"dataset": ..., "weights_sha256": ...,
                                                     "step": ..., "checkpoint": ..., "val": ..., ...}}}

An entry is keyed by what was evaluated: the SHA-256 of the backbone's weights
(:func:`weights_digest`) and the dataset. Figures of different weights are never merged (the
checkpoint at one path changes when a run is resumed); evaluating the same weights on the same
dataset again replaces the figures of the protocols that ran and keeps the others. Entries of a
version 1 file (keyed by dataset, from the checkpoint's path alone) are kept under
``<dataset>@unknown-weights`` and never merged with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcl_ssl.runs.files import read_json

__all__ = ["FORMAT", "VERSION", "add_entry", "entry_key", "read_eval_file", "weights_digest"]

FORMAT = "tcl-ssl-eval"
VERSION = 2


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex) of ``module``'s ``state_dict``: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def entry_key(dataset: str, weights_sha256: str | None) -> str:
    """The key of the entry of ``dataset`` evaluated with the weights of digest ``weights_sha256``."""
    return f"{dataset}@{weights_sha256[:16] if weights_sha256 else 'unknown-weights'}"


def _damaged(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a tcl-ssl eval.json ({why}); move it away or delete it, and tcl-ssl eval writes a new one"
    )


def read_eval_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The entries of the ``eval.json`` at ``path`` by key (empty if there is no file).

    Raises:
        ValueError: naming the file and what to do, if it is damaged or not an ``eval.json``.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        content = read_json(path)
    except ValueError as error:  # names the file: not valid JSON
        raise ValueError(f"{error}: move it away or delete it, and tcl-ssl eval writes a new one") from None
    if not isinstance(content, dict):
        raise _damaged(path, "not a JSON object")
    if "format" not in content:  # version 1: {dataset: entry}
        if not all(isinstance(entry, dict) for entry in content.values()):
            raise _damaged(path, "an entry is not a JSON object")
        return {entry_key(name, None): entry | {"weights_sha256": None} for name, entry in content.items()}
    if content.get("format") != FORMAT or not isinstance(content.get("version"), int):
        raise _damaged(path, f"format {content.get('format')!r}, version {content.get('version')!r}")
    if content["version"] > VERSION:
        raise ValueError(f"{path} has version {content['version']}; this tcl-ssl reads eval.json up to {VERSION}")
    entries = content.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
        raise _damaged(path, "its entries are not JSON objects")
    return entries


def add_entry(entries: dict[str, dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
    """The content of ``eval.json`` with ``entry`` (which has ``dataset``, ``weights_sha256``,
    ``protocols``, ``val``, ``test`` and ``linear_weight_decay``) added to ``entries``: an earlier
    entry of the same weights and dataset gives the figures of the protocols not run again."""
    key = entry_key(entry["dataset"], entry["weights_sha256"])
    previous = entries.get(key)
    if previous is not None and previous.get("weights_sha256") == entry["weights_sha256"]:
        entry = dict(entry)
        for split in ("val", "test"):
            entry[split] = previous.get(split, {}) | entry[split]
        entry["protocols"] = list(dict.fromkeys(previous.get("protocols", []) + entry["protocols"]))
        if entry["linear_weight_decay"] is None:
            entry["linear_weight_decay"] = previous.get("linear_weight_decay")
    return {"format": FORMAT, "version": VERSION, "entries": {**entries, key: entry}}
