"""The shared base of all pretraining methods (TCL and the baselines) as a LightningModule.

A method owns a backbone and whatever heads and losses it needs; it receives batches of uint8
images already on the device, augments them there in one batched call, and returns a loss.
It never knows where the data came from. Subclasses implement :meth:`Method.training_loss` and
state their training defaults (:class:`TrainingDefaults`) and the settings they support.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from tcl_ssl.methods.optim import OptimConfig, build_optimizer, build_scheduler


@dataclass(frozen=True)
class TrainingDefaults:
    """A method's training defaults, used where a run's configuration leaves a field unset.

    Attributes:
        optimizer: ``sgd`` or ``lars``.
        lr: peak learning rate at batch size 256 (scaled linearly with the global batch).
        weight_decay: weight decay of weights (norms and biases get none).
        warmup_epochs: linear warm-up; a run uses at most a tenth of its epochs, rounded to the nearest epoch.
        augmentation: name of the augmentation pipeline (one of :func:`augmentations.available`).
        num_views: full-size augmented views per image (multi-crop local crops are the
            augmentation's ``local_views`` option, not counted here).

    Example:
        >>> from tcl_ssl.methods import method_class
        >>> method_class("simclr").defaults
        TrainingDefaults(optimizer='lars', lr=1.0, weight_decay=0.0001, warmup_epochs=10, augmentation='simclr', num_views=2)
    """

    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: int
    augmentation: str
    num_views: int = 2


def trains_channels_last(device: torch.device, precision: str) -> bool:
    """Whether a method trains with its weights and views in ``torch.channels_last`` memory format
    on ``device`` at Lightning ``precision``: on the CPU under ``bf16-mixed`` (where oneDNN's
    bfloat16 convolutions run faster on channels-last tensors; see the training benchmark)."""
    return device.type == "cpu" and str(precision) == "bf16-mixed"


def check_positive(name: str, value: object) -> None:
    """Raise ``ValueError``, naming ``name``, unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_unit_interval(name: str, value: object) -> None:
    """Raise ``ValueError``, naming ``name``, unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_size(name: str, value: object) -> None:
    """Raise ``ValueError``, naming ``name``, unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def split_crops(views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split multi-crop views into the global ones (the leading views of view 0's size) and the
    local ones (the rest, smaller), as :func:`augmentations.build` orders them.

    Args:
        views: ``V`` views ``(B, C, H, W)``, the global views first.

    Returns:
        ``(global views, local views)``; the local list is empty for views of one size.
    """
    size = views[0].shape[-2:]
    count = next((i for i, view in enumerate(views) if view.shape[-2:] != size), len(views))
    return views[:count], views[count:]


def _same_size_runs(views: list[Tensor]) -> list[list[Tensor]]:
    """``views`` cut into runs of consecutive views of the same spatial size."""
    runs: list[list[Tensor]] = []
    for view in views:
        if runs and runs[-1][0].shape[-2:] == view.shape[-2:]:
            runs[-1].append(view)
        else:
            runs.append([view])
    return runs


def backbone_passes(backbone: nn.Module, views: list[Tensor]) -> Tensor:
    """``backbone`` features of ``V`` views, one batched pass per run of same-size views (one pass
    when all views have one size, as without multi-crop).

    Args:
        backbone: maps images ``(N, C, H, W)`` to features ``(N, F)``.
        views: ``V`` views ``(B, C, H_v, W_v)``.

    Returns:
        ``(V * B, F)`` features, view by view.
    """
    runs = _same_size_runs(views)
    if len(runs) == 1:
        return backbone(torch.cat(views))
    return torch.cat([backbone(torch.cat(run)) for run in runs])


class Method(pl.LightningModule):
    """A pretraining method as a LightningModule: backbone + on-device augmentation + optimiser.

    The loss is the subclass's (:meth:`training_loss`). A training step receives a uint8 batch
    ``(images, labels)`` on the device, augments it into ``V`` views in one batched call
    (:meth:`on_after_batch_transfer`), computes the loss, and also trains lightly's online
    linear probe on the detached backbone features of the first view (a monitor: no gradient
    reaches the backbone). Where :func:`trains_channels_last` says so, the module and the views
    are in ``torch.channels_last`` memory format during ``fit`` (back to the contiguous format
    after it; the values are the same). Subclasses state their training defaults (:attr:`defaults`), the
    settings they train in (:attr:`without_labels`, :attr:`with_labels`, :attr:`views`) and
    their own options as keyword arguments of ``__init__`` (:meth:`options`). Build one by name
    with :func:`~tcl_ssl.methods.method_class`.

    Args:
        backbone: maps images ``(B, C, H, W)`` to features ``(B, feature_dim)``.
        feature_dim: backbone output width.
        augment: maps a uint8 batch ``(B, C, H, W)`` to a list of ``V`` float views.
        supervised: pass labels to :meth:`training_loss` (otherwise it gets ``None``).
        num_classes: number of classes in the data (used by supervised methods and the online
            probe).
        optim: optimiser settings (default: :class:`OptimConfig`'s).

    Raises:
        ValueError: when the method cannot train in the ``supervised`` setting asked for.

    Example:
        >>> import torch
        >>> import augmentations
        >>> from tcl_ssl.methods import OptimConfig, method_class
        >>> backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> augment = augmentations.build("simclr", image_size=28, mean=(0.13,), std=(0.31,))
        >>> method = method_class("tcl")(backbone, 8, augment, optim=OptimConfig(lr=0.06))
        >>> views = augment(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> method.training_loss(views, None).shape
        torch.Size([])
    """

    #: registry name, used in messages
    name: ClassVar[str] = "method"
    #: whether the method trains without labels (self-supervised) and with labels (supervised)
    without_labels: ClassVar[bool] = True
    with_labels: ClassVar[bool] = False
    #: the settings ("self-supervised", "supervised") in which ``tcl-ssl compare`` runs it by
    #: default, among those it trains in
    compared_in: ClassVar[tuple[str, ...]] = ("self-supervised", "supervised")
    #: the number of full-size (global) views the method's loss accepts: (minimum, maximum or None)
    views: ClassVar[tuple[int, int | None]] = (2, None)
    #: whether the method also takes local crops (multi-crop: smaller views after the global
    #: ones, the augmentation's ``local_views``); ``views`` does not count them
    multi_crop: ClassVar[bool] = False
    #: the method's training defaults, and where they come from
    defaults: ClassVar[TrainingDefaults]
    source: ClassVar[str] = ""
    #: what an option whose default is ``None`` resolves to, in words (for the methods table)
    auto_options: ClassVar[dict[str, str]] = {}
    #: the method's key knobs for a tuning search beyond lr: ``{option: candidate values}``,
    #: each option one of :meth:`options`, its default (resolved without labels for a method that
    #: trains without them) among the values
    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        augment: nn.Module,
        *,
        supervised: bool = False,
        num_classes: int = 10,
        optim: OptimConfig | None = None,
    ) -> None:
        super().__init__()
        self.check_setting(supervised, local_views=getattr(augment, "local_views", 0))
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.augment = augment
        self.supervised = supervised
        self.num_classes = num_classes
        self.optim = optim or OptimConfig()
        # lightly's online linear probe on the detached backbone features of the first view,
        # trained with the train labels (also in self-supervised runs: a monitor, as in
        # lightly's and solo-learn's benchmarks; no gradient reaches the backbone)
        self.online_classifier = OnlineLinearClassifier(feature_dim, num_classes, topk=(1, min(5, num_classes)))
        self._probe_features: Tensor | None = None
        self._channels_last = False

    @classmethod
    def check_setting(cls, supervised: bool, num_views: int | None = None, local_views: int = 0) -> None:
        """Check that the method can train in this setting and with this many views.

        Args:
            supervised: whether the run trains with labels.
            num_views: full-size augmented views per image, or ``None`` to skip that check.
            local_views: local crops per image (multi-crop), after the full-size views.

        Raises:
            ValueError: naming what the method accepts instead.
        """
        if supervised and not cls.with_labels:
            raise ValueError(
                f"method {cls.name!r} is self-supervised only and cannot use labels; drop --supervised "
                "(supervised=True), or pick a method that trains with labels (see --list-methods)"
            )
        if not supervised and not cls.without_labels:
            raise ValueError(f"method {cls.name!r} needs labels; run it with --supervised (supervised=True)")
        low, high = cls.views
        if num_views is not None and not (low <= num_views and (high is None or num_views <= high)):
            allowed = f"exactly {low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise ValueError(f"method {cls.name!r} takes {allowed} views per image, got num_views={num_views}")
        if local_views and not cls.multi_crop:
            raise ValueError(
                f"method {cls.name!r} takes no local crops (multi-crop), got local_views={local_views}; "
                "drop the local_views pipeline option, or pick a multi-crop method (dino, swav)"
            )

    @classmethod
    def resolved_options(cls, supervised: bool) -> dict[str, Any]:
        """:meth:`options` with the values the method resolves when built in the given setting
        (a method whose options default to ``None`` overrides this).

        Args:
            supervised: whether the method is built with labels.

        Returns:
            ``{option: value}`` of every option.
        """
        return cls.options()

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The method's own keyword options and their defaults.

        The options are the keyword arguments of the ``__init__`` of the method's class and its
        bases, beyond :class:`Method`'s own arguments.

        Returns:
            ``{option: default}``, ``None`` where the method resolves the value when it is built.

        Example:
            >>> from tcl_ssl.methods import method_class
            >>> method_class("simclr").options()
            {'temperature': 0.5, 'hidden_dim': None, 'output_dim': 128}
        """
        base = set(inspect.signature(Method.__init__).parameters)
        options: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if not issubclass(klass, Method) or klass is Method or "__init__" not in vars(klass):
                continue
            for param in inspect.signature(klass.__init__).parameters.values():
                if param.name not in base and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                    options[param.name] = None if param.default is param.empty else param.default
        return options

    def forward(self, images: Tensor) -> Tensor:
        """Backbone features ``(B, feature_dim)`` of normalised images."""
        return self.backbone(images)

    def training_loss(self, views: list[Tensor], labels: Tensor | None) -> Tensor:
        """The scalar loss of one batch; every subclass implements it.

        Args:
            views: ``V`` augmented views ``(B, C, H, W)`` of the batch's images.
            labels: ``(B,)`` int64 labels in a supervised run, else ``None``.

        Returns:
            The scalar loss.
        """
        raise NotImplementedError

    def float32_loss(self, criterion: Callable[..., Tensor], *inputs: Tensor, **kwargs: Any) -> Tensor:
        """``criterion(*inputs, **kwargs)`` in float32 outside autocast, so that every method's loss
        is computed at the same precision as TCL's under mixed precision.

        Args:
            criterion: the loss (a module or a function).
            *inputs: tensors cast to float32 before the call.
            **kwargs: passed to ``criterion`` as they are.

        Returns:
            What ``criterion`` returns.
        """
        with torch.autocast(device_type=inputs[0].device.type, enabled=False):
            return criterion(*(x.float() for x in inputs), **kwargs)

    def embed_views(self, views: list[Tensor]) -> Tensor:
        """The backbone's features of the ``V`` views in one batched pass (one per resolution
        with multi-crop: :func:`backbone_passes`).

        The first view's features are kept, detached, for the online probe.

        Args:
            views: ``V`` views ``(B, C, H, W)`` (multi-crop: local crops smaller, after the others).

        Returns:
            ``(V * B, feature_dim)`` features, view by view.
        """
        features = backbone_passes(self.backbone, views)
        self._probe_features = features[: views[0].shape[0]].detach()
        return features

    def project_views(
        self, views: list[Tensor], head: nn.Module, backbone: nn.Module | None = None
    ) -> tuple[Tensor, ...]:
        """``head(backbone(view))`` of each of the ``V`` views in one batched pass (one backbone
        pass per resolution with multi-crop).

        Args:
            views: ``V`` views ``(B, C, H, W)`` (multi-crop: local crops smaller, after the others).
            head: maps features ``(N, feature_dim)`` to projections ``(N, D)``.
            backbone: the backbone to use; ``None``: the method's own, whose first-view
                features then feed the online probe (pass a momentum copy for target networks).

        Returns:
            ``V`` projections ``(B, D)``, one per view.
        """
        features = self.embed_views(views) if backbone is None else backbone_passes(backbone, views)
        return head(features).chunk(len(views))

    def on_fit_start(self) -> None:
        """Give each process its own augmentation stream (seed_everything seeds all alike); switch
        to channels-last memory format where :func:`trains_channels_last` says so."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)
        self._channels_last = trains_channels_last(self.device, self.trainer.precision)
        if self._channels_last:  # in place: the optimiser's parameters stay the same objects
            self.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        """Back to the contiguous memory format, for evaluation and export."""
        if self._channels_last:
            self.to(memory_format=torch.contiguous_format)
            self._channels_last = False

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment on the device while training: uint8 ``(images, labels)`` -> ``(views, labels)``
        (the views in channels-last memory format when the module is); other batches are returned
        as they are. The augmentation runs in float32: Lightning's autocast covers the training
        step, not this hook."""
        if self.trainer is not None and self.trainer.training:
            images, labels = batch
            with torch.no_grad():
                views = self.augment(images)
            if self._channels_last:
                views = [view.contiguous(memory_format=torch.channels_last) for view in views]
            batch = (views, labels)
        return batch

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        """The method's loss plus the online probe's, logged as ``train_loss`` and the probe's metrics."""
        views, labels = batch
        self._probe_features = None
        loss = self.training_loss(views, labels if self.supervised else None)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=labels.shape[0])
        if self._probe_features is None:
            raise RuntimeError(
                f"method {self.name!r} computed its backbone features without embed_views() or project_views(), "
                "so the online linear probe has nothing to train on"
            )
        probe_loss, probe_log = self.online_classifier.training_step((self._probe_features, labels), batch_idx)
        self.log_dict(probe_log, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        return loss + probe_loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """:func:`~tcl_ssl.methods.optim.build_optimizer` and its per-step scheduler, for this run's
        world size and length."""
        optimizer = build_optimizer(self, self.optim, self.trainer.world_size, undecayed=self.online_classifier)
        scheduler = build_scheduler(
            optimizer, self.optim, self.trainer.estimated_stepping_batches, self.trainer.max_epochs or 1
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
