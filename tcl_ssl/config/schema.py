"""Every option of a pretraining run, declared once, in groups.

:class:`PretrainConfig` holds one dataclass per group (:class:`DataOptions`,
:class:`ModelOptions`, :class:`MethodOptions`, :class:`OptimOptions`, :class:`EvalOptions`,
:class:`TrainerOptions`, :class:`RunOptions`). Each field is declared with
:func:`~tcl_ssl.config.spec.option`: its type, default, help, flat key, command-line flags, older
names and its role (part of a comparison's budget; sweepable). The command line, recipe files,
``config.json``, validation, ``--resume`` (which keeps the data group, backbone, stem, method and
``supervised``: :data:`tcl_ssl.runs.reuse.RESUME_KEEPS`), ``tcl-ssl compare`` (which holds the
budget equal) and ``tcl-ssl sweep`` (which varies the sweepable options) all derive from these
declarations. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from tcl_ssl.config.checks import (
    ACCELERATORS,
    PROTOCOLS,
    STRATEGIES,
    check_devices,
    check_limit_batches,
    check_precision,
    parse_limit_batches,
)
from tcl_ssl.config.spec import ConfigError, OptionSpec, Shortcut, check_value, option, spec_of

__all__ = [
    "RUN_DIR_ENV",
    "DataOptions",
    "EvalOptions",
    "MethodOptions",
    "ModelOptions",
    "OptimOptions",
    "OptionInfo",
    "PretrainConfig",
    "RunOptions",
    "TrainerOptions",
]

#: environment variable that hands the run directory to DDP child processes
RUN_DIR_ENV = "TCL_SSL_RUN_DIR"


def _below_one(fraction: float) -> float:
    """A fraction of a split: below 1, so that something is left."""
    if fraction >= 1:
        raise ValueError("a number in (0, 1)")
    return fraction


@dataclass(frozen=True)
class DataOptions:
    """Data: the dataset and its splits (a resumed run keeps these)."""

    dataset: str = option(
        "mnist5k",
        help="mnist5k (built in), cifar10, cifar100, mnist, fashion-mnist, svhn, stl10, torchvision:<ClassName>, "
        "or the path of an image folder root/<class>/<image>",
        budget=True,
    )
    data_dir: str | None = option(None, help="where torchvision datasets are stored/downloaded", budget=True)
    image_size: int | None = option(
        None, minimum=8, help="resize every image to this side (image folders: default 32)", budget=True
    )
    decode_size: int | None = option(
        None,
        minimum=8,
        help="image folders: decode to this side (shorter side, centre crop); the views are --image-size",
        budget=True,
    )
    val_fraction: float | None = option(
        None,
        exclusive_minimum=0,
        check=_below_one,
        help="fraction of train held out for validation (default 0.1), where validation is split off train",
        budget=True,
    )
    test_fraction: float | None = option(
        None,
        exclusive_minimum=0,
        check=_below_one,
        help="fraction held out for test from a single image folder (default 0.2)",
        budget=True,
    )
    train_images: int | None = option(
        None,
        minimum=2,
        help="train on a stratified subset of this many images of the train split (val and test unchanged)",
        budget=True,
        sweep=True,
    )
    skip_bad_images: bool = option(
        False,
        help="leave out image files that cannot be decoded, with a warning (default: stop and name the file)",
        budget=True,
    )


@dataclass(frozen=True)
class ModelOptions:
    """Model: the backbone."""

    backbone: str = option("resnet18", help="resnet18, resnet34 or resnet50", budget=True)
    stem: str | None = option(
        None,
        help="imagenet, small or small-pool (default: small for <= 64 px on a GPU, else imagenet)",
        budget=True,
    )


@dataclass(frozen=True)
class MethodOptions:
    """Method: what is trained, with which loss options and views (default: the method's own)."""

    name: str = option("tcl", key="method", flags=("--method",), help="tcl, or a baseline (see --list-methods)")
    supervised: bool = option(False, help="use labels (positives = same class)", budget=True)
    options: dict[str, Any] = option(
        default_factory=dict,
        key="method_options",
        flags=("-o", "--method-option"),
        metavar="NAME=VALUE",
        help="any option of the method (see --list-methods), e.g. -o queue_size=8192 -o momentum_start=0.996",
        shortcuts={
            "temperature": Shortcut("loss temperature"),
            "k1": Shortcut("TCL hard-positive weight"),
            "k2": Shortcut("TCL negative weight"),
        },
        sweep=True,
    )
    augmentation: str | None = option(
        None, help="augmentation pipeline, e.g. simclr, mocov2, byol, supcon, simaug, crop-flip", sweep=True
    )
    augmentation_options: dict[str, Any] = option(
        default_factory=dict,
        flags=("--pipeline-option",),
        metavar="NAME=VALUE",
        help="any option of the augmentation pipeline, e.g. --pipeline-option weak_view=true",
        shortcuts={"min_scale": Shortcut("smallest crop area fraction")},
        sweep=True,
    )
    num_views: int | None = option(
        None, minimum=1, help="full-size views per image (local crops: --pipeline-option local_views=N)", sweep=True
    )


@dataclass(frozen=True)
class OptimOptions:
    """Optimisation (default: the method's published settings)."""

    epochs: int = option(8, minimum=1, help="training epochs", budget=True, sweep=True)
    batch_size: int = option(128, minimum=2, help="images per step and process", budget=True, sweep=True)
    optimizer: Literal["sgd", "lars"] | None = option(None, help="sgd or lars", sweep=True)
    lr: float | None = option(
        None, exclusive_minimum=0, help="peak learning rate at batch size 256 (scaled linearly)", sweep=True
    )
    weight_decay: float | None = option(None, minimum=0, help="weight decay", sweep=True)
    warmup_epochs: int | None = option(
        None, minimum=0, help="linear warm-up epochs (default: the method's, at most a tenth of the run)", sweep=True
    )


@dataclass(frozen=True)
class EvalOptions:
    """Evaluation (validation split: choose; test split: report)."""

    knn_k: int = option(200, minimum=1, help="neighbours of the kNN classifier", budget=True)
    knn_temperature: float = option(0.1, exclusive_minimum=0, help="kNN vote temperature", budget=True)
    knn_every: int = option(
        1,
        minimum=0,
        aliases=("knn_every_n_epochs",),
        help="epochs between the validation kNN and online-probe checks (0: off)",
        budget=True,
    )
    protocols: list[str] = option(
        default_factory=lambda: ["knn", "linear"],
        aliases=("eval_protocols",),
        choices=PROTOCOLS,
        help="evaluations after training, comma-separated: knn, linear, linear-aug, retrieval",
        budget=True,
    )
    linear_aug_epochs: int = option(90, minimum=1, help="epochs of the linear-aug protocol", budget=True)
    linear_aug_lr: float = option(
        0.1, exclusive_minimum=0, help="lr of the linear-aug protocol at batch 256 (scaled linearly)", budget=True
    )
    plots: bool = option(True, help="draw the run's pictures (curves, t-SNE, confusion matrix)", affects_results=False)


@dataclass(frozen=True)
class TrainerOptions:
    """Trainer: devices, precision, processes, logging, checkpoints and data loading."""

    precision: int | str | None = option(
        None,
        check=check_precision,
        help="Lightning precision, e.g. 32-true, bf16-mixed (default: bf16-mixed on a GPU, else 32-true)",
        budget=True,
    )
    accelerator: str = option("auto", choices=ACCELERATORS, help="Lightning's: auto, cpu, gpu", budget=True)
    devices: int | str | list[int] = option(
        "auto",
        check=check_devices,
        help="Lightning's: a count, a comma-separated list of device indices, or auto",
        budget=True,
    )
    num_nodes: int = option(1, minimum=1, help="machines taking part", budget=True)
    strategy: str = option("auto", choices=STRATEGIES, help="Lightning's: auto, ddp, ddp_spawn, fsdp, ...")
    sync_batchnorm: bool = option(False, help="BatchNorm statistics over all processes (GPUs only)")
    logger: Literal["csv", "tensorboard"] = option(
        "csv", help="csv, or tensorboard as well (needs the tensorboard package)", affects_results=False
    )
    checkpoint_every_n_steps: int = option(
        0,
        minimum=0,
        help="also write last.ckpt every N optimiser steps (0: at the end of each epoch only)",
        affects_results=False,
    )
    metrics_every_n_steps: int = option(
        10, minimum=1, help="optimiser steps between the per-step rows of metrics.csv", affects_results=False
    )
    limit_train_batches: int | float = option(
        1.0,
        parse=parse_limit_batches,
        check=check_limit_batches,
        hidden=True,
        help="batches per epoch: an integer >= 1, or a fraction of the epoch in (0, 1] (tests)",
        budget=True,
    )
    data_source: Literal["auto", "memory", "stream"] = option(
        "auto",
        help="image folders: decode once into memory, or stream from the files with loader workers; "
        "auto streams folders whose decoded images exceed an eighth of this machine's memory",
        affects_results=False,
    )
    workers: int | None = option(
        None,
        minimum=0,
        help="streamed folders: decoding processes per training process (default: CPU cores, at most 8)",
        affects_results=False,
    )


@dataclass(frozen=True)
class RunOptions:
    """Run: seed and directories."""

    seed: int = option(
        0, minimum=0, maximum=2**32 - 1, help="random seed of the weights, the data order and the augmentation"
    )
    out: str | None = option(None, help="run directory (default runs/<timestamp>-<method>)", affects_results=False)
    resume: str | None = option(
        None,
        metavar="RUN",
        help="run directory or checkpoint to resume from (RUN = RUN/checkpoints/last.ckpt): the run's "
        "configuration, changed only by the options given here (e.g. --epochs), continues in RUN; rerunning "
        "with the --out of a run resumes it the same way",
        affects_results=False,
    )
    recipe: str | None = option(
        None, flags=(), help="the recipe file this configuration started from", affects_results=False
    )


@dataclass(frozen=True)
class OptionInfo:
    """Where an option lives: its group, its field in the group, its type and its declaration."""

    group: str
    name: str
    hint: Any
    spec: OptionSpec

    @property
    def key(self) -> str:
        return self.spec.key


_GROUPS: dict[str, type] = {
    "data": DataOptions,
    "model": ModelOptions,
    "method": MethodOptions,
    "optim": OptimOptions,
    "eval": EvalOptions,
    "trainer": TrainerOptions,
    "run": RunOptions,
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines one pretraining run, in groups; the defaults give the CPU quick start.

    Build one from flat keys with :meth:`build` (``PretrainConfig.build(epochs=3, method="simclr")``),
    from a recipe or ``config.json`` mapping with :meth:`from_dict`, and change options by key
    with :meth:`replace`. ``None`` in a method-dependent option (augmentation, views, optimiser,
    lr, weight decay, warm-up) takes the method's default in :meth:`resolved`.

    Example:
        >>> config = PretrainConfig.build(method="simclr", epochs=3)
        >>> config.optim.epochs, config.get("method")
        (3, 'simclr')
    """

    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    method: MethodOptions = dataclasses.field(default_factory=MethodOptions)
    optim: OptimOptions = dataclasses.field(default_factory=OptimOptions)
    eval: EvalOptions = dataclasses.field(default_factory=EvalOptions)
    trainer: TrainerOptions = dataclasses.field(default_factory=TrainerOptions)
    run: RunOptions = dataclasses.field(default_factory=RunOptions)

    #: the group classes by name, in the order of ``--help`` and ``config.json``
    GROUPS: ClassVar[dict[str, type]] = _GROUPS

    # --- the index derived from the declarations ---------------------------------------------

    @staticmethod
    def options() -> dict[str, OptionInfo]:
        """Every option by its flat key, in declaration order."""
        return _index()

    @staticmethod
    def option_info(key: str) -> OptionInfo:
        """The option called ``key`` (or one of its older names).

        Raises:
            ConfigError: for an unknown key, listing the known ones.
        """
        index = _index()
        key = _aliases().get(key, key)
        if key not in index:
            raise ConfigError(f"unknown option {key!r}; options: {', '.join(index)}")
        return index[key]

    # --- building and changing ---------------------------------------------------------------

    @classmethod
    def build(cls, **by_key: Any) -> PretrainConfig:
        """A configuration with the options given by flat key (``epochs=3``) and defaults elsewhere.

        Raises:
            ConfigError: for an unknown key, or a value its declaration does not allow."""
        return cls().replace(**by_key)

    def replace(self, **by_key: Any) -> PretrainConfig:
        """This configuration with the options given by flat key (or older name) changed, each
        new value checked against its declaration (numbers converted where that is lossless).

        Raises:
            ConfigError: for an unknown key, or a value its declaration does not allow (naming
                the option, the value and what is allowed).
        """
        changes: dict[str, dict[str, Any]] = {}
        for key, value in by_key.items():
            info = self.option_info(key)
            changes.setdefault(info.group, {})[info.name] = check_value(info.key, value, info.hint, info.spec)
        groups = {name: dataclasses.replace(getattr(self, name), **fields) for name, fields in changes.items()}
        return dataclasses.replace(self, **groups)

    def get(self, key: str) -> Any:
        """The value of the option called ``key``."""
        info = self.option_info(key)
        return getattr(getattr(self, info.group), info.name)

    def flat(self) -> dict[str, Any]:
        """Every option's value by flat key."""
        return {key: getattr(getattr(self, info.group), info.name) for key, info in _index().items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested mapping of ``config.json`` and recipe files: ``{group: {field: value}}``."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _GROUPS}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], where: str = "configuration") -> PretrainConfig:
        """A configuration from a mapping of groups (``{"optim": {"epochs": 3}}``), flat keys
        (``{"epochs": 3}``, as in older recipe files and ``config.json``) or both; every value
        checked.

        Args:
            content: the mapping.
            where: what the mapping came from, for messages (e.g. the file's path).

        Raises:
            ConfigError: for an unknown name or a value of the wrong type or range, naming
                ``where``, the option and what is allowed.
        """
        flat: dict[str, Any] = {}
        for name, value in content.items():
            if name in _GROUPS and isinstance(value, Mapping):
                fields = {f.name: f for f in dataclasses.fields(_GROUPS[name])}
                for field_name, field_value in value.items():
                    if field_name not in fields:
                        allowed = ", ".join(fields)
                        raise ConfigError(f"{where}: group {name!r} has no option {field_name!r}; allowed: {allowed}")
                    flat[spec_of(fields[field_name]).key] = field_value
            else:
                key = _aliases().get(name, name)
                if key not in _index():
                    raise ConfigError(f"{where}: unknown option {name!r}; options: {', '.join(_index())}")
                flat[key] = value
        try:
            return cls.build(**flat).checked()
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    def checked(self) -> PretrainConfig:
        """This configuration with every value checked against its declaration (numbers
        converted where that is lossless).

        Raises:
            ConfigError: naming the first bad option, its value and what is allowed.
        """
        values = {key: check_value(key, self.get(key), info.hint, info.spec) for key, info in _index().items()}
        return PretrainConfig.build(**values)

    # --- what the rest of the project asks of a configuration --------------------------------

    def resolved(self) -> PretrainConfig:
        """This configuration with every unset method-dependent option taken from the method's
        defaults. A default warm-up lasts at most a tenth of the run, rounded to the nearest whole
        epoch; a warm-up given explicitly is kept."""
        # the method classes import torch; this module must not (``tcl-ssl --help``)
        from tcl_ssl.methods import method_class

        defaults = method_class(self.method.name).defaults
        method, optim = self.method, self.optim
        warmup = optim.warmup_epochs
        if warmup is None:
            warmup = min(defaults.warmup_epochs, math.floor(optim.epochs / 10 + 0.5))
        return self.replace(
            augmentation=method.augmentation or defaults.augmentation,
            num_views=method.num_views or defaults.num_views,
            optimizer=optim.optimizer or defaults.optimizer,
            lr=defaults.lr if optim.lr is None else optim.lr,
            weight_decay=defaults.weight_decay if optim.weight_decay is None else optim.weight_decay,
            warmup_epochs=warmup,
        )

    def run_dir(self) -> Path:
        """``run.out``, or ``runs/<timestamp>-<method>``; DDP child processes (which re-run the
        script) get their parent's directory through :data:`RUN_DIR_ENV`."""
        if self.run.out is not None:
            return Path(self.run.out)
        if RUN_DIR_ENV in os.environ:
            return Path(os.environ[RUN_DIR_ENV])
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{stamp}-{self.method.name}{'-sup' if self.method.supervised else ''}"

    @staticmethod
    def budget_keys() -> list[str]:
        """The options every method of a comparison must share."""
        return [key for key, info in _index().items() if info.spec.budget]

    @staticmethod
    def sweep_keys() -> list[str]:
        """The options ``tcl-ssl sweep`` may vary (the mapping options by their entries)."""
        return [key for key, info in _index().items() if info.spec.sweep]

    @staticmethod
    def group_keys(group: str) -> list[str]:
        """The flat keys of one group's options."""
        return [key for key, info in _index().items() if info.group == group]


@functools.cache
def _index() -> dict[str, OptionInfo]:
    index: dict[str, OptionInfo] = {}
    for group, cls in _GROUPS.items():
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            spec = spec_of(item)
            if spec.key in index:
                raise TypeError(f"option key {spec.key!r} is declared twice")
            index[spec.key] = OptionInfo(group, item.name, hints[item.name], spec)
    return index


@functools.cache
def _aliases() -> dict[str, str]:
    return {alias: key for key, info in _index().items() for alias in info.spec.aliases}
