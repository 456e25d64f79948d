"""What the options that Lightning and the evaluation read may hold, checked at the door
without importing torch: each ``check_*`` takes a value of the option's type and returns it
(normalised where needed) or raises ``ValueError`` saying what is allowed (the option's name
and the value are added by :func:`~tcl_ssl.config.spec.check_value`).

The names are those of pytorch_lightning 2.x (``tests/test_config.py`` compares them with the
installed Lightning's registries).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ACCELERATORS",
    "PRECISIONS",
    "PROTOCOLS",
    "STRATEGIES",
    "check_devices",
    "check_limit_batches",
    "check_precision",
    "parse_limit_batches",
]

#: the evaluation protocols after training (:mod:`tcl_ssl.evaluation.suite`)
PROTOCOLS = ("knn", "linear", "linear-aug", "retrieval")

#: Lightning's ``precision`` values (``lightning_fabric``'s ``_PRECISION_INPUT``)
PRECISIONS: tuple[int | str, ...] = (
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
)

#: Lightning's ``accelerator`` names (its registry, plus ``auto`` and ``gpu``)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

#: Lightning's ``strategy`` names (its registry, plus ``auto``)
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_false",
    "ddp_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_false",
    "ddp_fork_find_unused_parameters_true",
    "ddp_notebook_find_unused_parameters_false",
    "ddp_notebook_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false",
    "ddp_spawn_find_unused_parameters_true",
    "deepspeed",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_2_offload",
    "deepspeed_stage_3",
    "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme",
    "fsdp",
    "fsdp_cpu_offload",
    "single_device",
    "single_tpu",
    "single_xla",
    "xla",
    "xla_debug",
)

_DEVICES = "a count >= 1, -1 (all), auto, or device indices such as 0,1 or [0, 1]"


def check_devices(devices: int | str | list[int]) -> int | str | list[int]:
    """Lightning's ``devices``: a count (-1: all), ``auto``, or distinct device indices as a list
    or a comma-separated text (kept as given)."""
    if isinstance(devices, int):
        if devices >= 1 or devices == -1:
            return devices
    elif isinstance(devices, list):
        if devices and all(d >= 0 for d in devices) and len(set(devices)) == len(devices):
            return devices
    else:
        text = devices.strip()
        parts = [part.strip() for part in text.split(",")]
        if text == "auto" or (all(part.isdigit() for part in parts) and len(set(parts)) == len(parts)):
            return text
    raise ValueError(_DEVICES)


def check_precision(precision: int | str) -> int | str:
    """Lightning's ``precision``: one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS or isinstance(precision, bool):
        raise ValueError("one of " + ", ".join(dict.fromkeys(str(p) for p in PRECISIONS)))
    return precision


def parse_limit_batches(text: str) -> int | float:
    """``--limit-train-batches``: a whole number of batches (``3``), or a fraction of the epoch
    (``0.25``; ``1.0`` is the whole epoch), as Lightning reads an int and a float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError("a number of batches (an integer >= 1) or a fraction of the epoch in (0, 1]") from None


def check_limit_batches(limit: Any) -> int | float:
    """Lightning's ``limit_train_batches``: an integer >= 1 (batches) or a float in (0, 1]
    (a fraction of the epoch)."""
    if isinstance(limit, int) and limit >= 1:
        return limit
    if isinstance(limit, float) and 0 < limit <= 1:
        return limit
    raise ValueError("a number of batches (an integer >= 1) or a fraction of the epoch in (0, 1]")
