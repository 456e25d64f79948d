"""The run configuration: every option declared once (:mod:`~tcl_ssl.config.schema`), the
declaration machinery (:mod:`~tcl_ssl.config.spec`) and recipe files
(:mod:`~tcl_ssl.config.recipes`). Importing it does not import torch."""

from tcl_ssl.config.schema import (
    RUN_DIR_ENV,
    DataOptions,
    EvalOptions,
    MethodOptions,
    ModelOptions,
    OptimOptions,
    OptionInfo,
    PretrainConfig,
    RunOptions,
    TrainerOptions,
)
from tcl_ssl.config.spec import ConfigError, OptionSpec, Shortcut, option

__all__ = [
    "RUN_DIR_ENV",
    "ConfigError",
    "DataOptions",
    "EvalOptions",
    "MethodOptions",
    "ModelOptions",
    "OptimOptions",
    "OptionInfo",
    "OptionSpec",
    "PretrainConfig",
    "RunOptions",
    "Shortcut",
    "TrainerOptions",
    "option",
]
