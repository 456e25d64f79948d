"""The named augmentation pipelines of the published methods, their registry, and :func:`build`.

Each pipeline is defined by a function ``pipeline(view, *, image_size, channels, **options) ->
nn.Module`` that returns the transform of view number ``view`` (0-based): a module mapping
float32 ``(B, C, H, W)`` in [0, 1] to ``(B, C, image_size, image_size)`` in [0, 1], built from
:mod:`augmentations.ops`. Symmetric pipelines ignore ``view``. Options are keyword arguments
with the method's published defaults; :func:`build` passes its ``pipeline_options`` through and
wraps the views in a :class:`~augmentations.Pipeline`.

A new pipeline is one function here plus one line in :data:`PIPELINES`.

Multi-crop (DINO, SwAV): :func:`build` can add ``local_views`` local crops, smaller
(``local_size``) and of a smaller area range (``local_min_scale``-``local_max_scale``) than the
global views, after them. A local crop is the pipeline's own view transform with its random
resized crop replaced by one at that size and scale; no library offers this for batches on the
device (lightly's ``DINOTransform``/``SwaVTransform`` are per-image torchvision transforms).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from kornia import augmentation as K
from torch import nn

from augmentations import ops
from augmentations.pipeline import Pipeline

#: a pipeline's function: ``(view, *, image_size, channels, **options) -> nn.Module``
PipelineFunction = Callable[..., nn.Module]

#: the default area range of local crops: SwAV's (Caron et al., 2020), also DINO's for ResNets
LOCAL_SCALE = (0.05, 0.14)


def simclr(
    view: int, *, image_size: int, channels: int, min_scale: float = 0.08, jitter_strength: float = 0.5
) -> nn.Sequential:
    """SimCLR (Chen et al., 2020), as in the paper's appendix A.

    Random resized crop (area ``min_scale``-1), horizontal flip, colour jitter of strength ``s``
    (brightness, contrast, saturation ``0.8 s``, hue ``0.2 s``; ``s = 0.5`` is the paper's CIFAR-10
    setting, 0.4/0.4/0.4/0.1) with p 0.8, grayscale p 0.2, Gaussian blur p 0.5 above 32 px.
    """
    _check_fraction("min_scale", min_scale)
    _check_range("jitter_strength", jitter_strength, 0.0, 1.25)
    s = jitter_strength
    return ops.sequential(
        ops.resized_crop(image_size, (min_scale, 1.0)),
        ops.horizontal_flip(),
        ops.colour_jitter(channels, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8),
        ops.grayscale(channels, p=0.2),
        ops.gaussian_blur(image_size, p=0.5),
    )


def mocov2(view: int, *, image_size: int, channels: int, min_scale: float = 0.2) -> nn.Sequential:
    """MoCo v2 (Chen et al., 2020), the ``aug_plus`` augmentation of the official code.

    Random resized crop (area ``min_scale``-1), colour jitter 0.4/0.4/0.4/0.1 with p 0.8,
    grayscale p 0.2, Gaussian blur p 0.5 above 32 px, horizontal flip.
    """
    _check_fraction("min_scale", min_scale)
    return ops.sequential(
        ops.resized_crop(image_size, (min_scale, 1.0)),
        ops.colour_jitter(channels, 0.4, 0.4, 0.4, 0.1, p=0.8),
        ops.grayscale(channels, p=0.2),
        ops.gaussian_blur(image_size, p=0.5),
        ops.horizontal_flip(),
    )


def byol(view: int, *, image_size: int, channels: int, min_scale: float = 0.08) -> nn.Sequential:
    """BYOL (Grill et al., 2020), table 6: two asymmetric view configurations.

    Both: random resized crop (area ``min_scale``-1), horizontal flip, colour jitter
    0.4/0.4/0.2/0.1 with p 0.8, grayscale p 0.2. Even views (0, 2, ...): Gaussian blur p 1.0, no
    solarization; odd views: blur p 0.1, solarization p 0.2. Blur only above 32 px.
    """
    _check_fraction("min_scale", min_scale)
    first = view % 2 == 0
    return ops.sequential(
        ops.resized_crop(image_size, (min_scale, 1.0)),
        ops.horizontal_flip(),
        ops.colour_jitter(channels, 0.4, 0.4, 0.2, 0.1, p=0.8),
        ops.grayscale(channels, p=0.2),
        ops.gaussian_blur(image_size, p=1.0 if first else 0.1),
        ops.solarize(p=0.0 if first else 0.2),
    )


def supcon(
    view: int, *, image_size: int, channels: int, policy: str | None = None, padding: int | None = None
) -> nn.Sequential:
    """Supervised Contrastive Learning (Khosla et al., 2020): the supervised default, AutoAugment.

    Fit to ``image_size`` (resize the shorter side, centre crop), random crop with ``padding``
    pixels of zero padding (default 4 at 32 px, scaled), horizontal flip, AutoAugment with
    ``policy`` (default ``"cifar10"`` at 32 px and below, ``"imagenet"`` above).
    """
    if policy is None:
        policy = "cifar10" if image_size <= ops.SMALL_IMAGE else "imagenet"
    if policy not in ops.AUTOAUGMENT_POLICIES:
        raise ValueError(f"policy must be one of {', '.join(ops.AUTOAUGMENT_POLICIES)}; got {policy!r}")
    if padding is None:
        padding = ops.crop_padding(image_size)
    _check_int("padding", padding, minimum=0)
    return ops.sequential(
        ops.FitToSize(image_size),
        ops.padded_crop(image_size, padding),
        ops.horizontal_flip(),
        ops.auto_augment(channels, policy),
    )


def simaug(view: int, *, image_size: int, channels: int, min_scale: float = 0.2) -> nn.Sequential:
    """SimAugment, the SimCLR-style augmentation of the official SupCon code (its ``TwoCropTransform``).

    Random resized crop (area ``min_scale``-1), horizontal flip, colour jitter 0.4/0.4/0.4/0.1
    with p 0.8, grayscale p 0.2. No blur.
    """
    _check_fraction("min_scale", min_scale)
    return ops.sequential(
        ops.resized_crop(image_size, (min_scale, 1.0)),
        ops.horizontal_flip(),
        ops.colour_jitter(channels, 0.4, 0.4, 0.4, 0.1, p=0.8),
        ops.grayscale(channels, p=0.2),
    )


def crop_flip(view: int, *, image_size: int, channels: int, min_scale: float = 0.2) -> nn.Sequential:
    """Random resized crop (area ``min_scale``-1) and horizontal flip, nothing else.

    The training augmentation of the supervised cross-entropy baseline in the official SupCon
    code (``main_ce.py``: ``RandomResizedCrop(scale=(0.2, 1))``, ``RandomHorizontalFlip``).
    """
    _check_fraction("min_scale", min_scale)
    return ops.sequential(ops.resized_crop(image_size, (min_scale, 1.0)), ops.horizontal_flip())


def evaluation(view: int, *, image_size: int, channels: int) -> ops.FitToSize:
    """Evaluation: resize the shorter side to ``image_size`` and centre crop. Deterministic."""
    return ops.FitToSize(image_size)


PIPELINES: dict[str, PipelineFunction] = {
    "simclr": simclr,
    "mocov2": mocov2,
    "byol": byol,
    "supcon": supcon,
    "simaug": simaug,
    "crop-flip": crop_flip,
    "eval": evaluation,
}
"""The pipelines' functions by the name :func:`build` takes."""


def available() -> list[str]:
    """Names of the augmentation pipelines :func:`build` knows, in a fixed order.

    Example:
        >>> import augmentations
        >>> augmentations.available()
        ['simclr', 'mocov2', 'byol', 'supcon', 'simaug', 'crop-flip', 'eval']
    """
    return list(PIPELINES)


def build(
    name: str,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_views: int = 2,
    weak_view: bool = False,
    local_views: int = 0,
    local_size: int | None = None,
    local_min_scale: float = LOCAL_SCALE[0],
    local_max_scale: float = LOCAL_SCALE[1],
    seed: int | None = None,
    per_image_choices: bool = True,
    **pipeline_options: object,
) -> Pipeline:
    """Build the augmentation pipeline called ``name``.

    Args:
        name: one of :func:`available`.
        image_size: side in pixels of the square views.
        mean: per-channel mean in [0, 1] units; 3 values for RGB, 1 for grayscale (the
            pipeline then leaves out saturation, hue and grayscale conversion).
        std: per-channel standard deviation in [0, 1] units, positive, as many as ``mean``.
        num_views: number of views the pipeline returns (before ``weak_view``).
        weak_view: append one more view, fitted to size (shorter side resized, centre crop)
            and randomly flipped only, as an extra positive.
        local_views: append this many local crops (multi-crop, as DINO and SwAV), after the
            ``num_views`` global views and the weak view: view number ``num_views + j``'s
            transform of the pipeline, with its random resized crop replaced by one of area
            ``local_min_scale``-``local_max_scale`` resized to ``local_size``. Only pipelines that
            start from a random resized crop can make them.
        local_size: side in pixels of the local crops, smaller than ``image_size``; default
            ``round(image_size * 96 / 224)`` (the 96 px local crops of 224 px images in the DINO and
            SwAV papers: 14 px at 32 px, 12 px at 28 px).
        local_min_scale: smallest area fraction of a local crop (default 0.05: SwAV's, and DINO's
            for ResNets).
        local_max_scale: largest area fraction of a local crop (default 0.14: the same sources).
        seed: seed of the pipeline's own random stream (see :class:`Pipeline`); ``None``
            draws from torch's global generator.
        per_image_choices: choose the colour-jitter order and the AutoAugment sub-policy per
            image, as torchvision does; ``False`` chooses one per view for the whole batch
            (kornia's own behaviour), which is cheaper but less varied within a batch.
        **pipeline_options: keyword options of the pipeline's function, e.g. ``min_scale``.

    Returns:
        A :class:`Pipeline` returning ``num_views + weak_view`` views of ``image_size`` pixels,
        then ``local_views`` views of ``local_size`` pixels.

    Raises:
        ValueError: naming the bad argument and what is allowed.

    Example:
        >>> import torch
        >>> import augmentations
        >>> pipeline = augmentations.build("simclr", image_size=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        >>> images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
        >>> view0, view1 = pipeline(images)
        >>> view0.shape, view0.dtype
        (torch.Size([4, 3, 32, 32]), torch.float32)
    """
    pipeline_function = PIPELINES.get(name)
    if pipeline_function is None:
        raise ValueError(f"unknown augmentation pipeline {name!r}; available: {', '.join(PIPELINES)}")
    _check_int("image_size", image_size, minimum=1)
    _check_int("num_views", num_views, minimum=1)
    for flag, value in (("weak_view", weak_view), ("per_image_choices", per_image_choices)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    if seed is not None:
        _check_int("seed", seed, minimum=0)
    mean, std = _check_stats(mean, std)
    allowed = [
        p for p in inspect.signature(pipeline_function).parameters if p not in ("view", "image_size", "channels")
    ]
    unknown = sorted(set(pipeline_options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for pipeline {name!r}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'}"
        )
    views = [
        pipeline_function(i, image_size=image_size, channels=len(mean), **pipeline_options) for i in range(num_views)
    ]
    if weak_view:
        views.append(ops.sequential(ops.FitToSize(image_size), ops.horizontal_flip()))
    size = _check_local_crops(image_size, local_views, local_size, local_min_scale, local_max_scale)
    if size is not None:
        for j in range(local_views):
            view = pipeline_function(num_views + j, image_size=size, channels=len(mean), **pipeline_options)
            views.append(_with_local_crop(name, view, size, (local_min_scale, local_max_scale)))
    pipeline = Pipeline(
        views, image_size=image_size, mean=mean, std=std, seed=seed, local_views=local_views, local_size=size
    )
    for module in pipeline.modules():
        if isinstance(module, (ops.RandomChoice, ops.ColourJitter)):
            module.per_image = per_image_choices
    return pipeline


def _check_local_crops(
    image_size: int, local_views: int, local_size: int | None, low: float, high: float
) -> int | None:
    """Check the multi-crop options; return the local crops' side (``None`` without local crops)."""
    _check_int("local_views", local_views, minimum=0)
    if local_size is None:
        local_size = max(1, round(image_size * 96 / 224))
    _check_int("local_size", local_size, minimum=1)
    _check_fraction("local_min_scale", low)
    _check_fraction("local_max_scale", high)
    if low > high:
        raise ValueError(f"local_min_scale ({low}) must be at most local_max_scale ({high})")
    if local_views == 0:
        return None
    if local_size >= image_size:
        raise ValueError(f"local_size must be smaller than image_size ({image_size}), got {local_size}")
    return local_size


def _with_local_crop(name: str, view: nn.Module, size: int, scale: tuple[float, float]) -> nn.Module:
    """``view`` with its random resized crop replaced by one of area ``scale`` resized to ``size``."""
    crops = (
        [i for i, op in enumerate(view) if isinstance(op, K.RandomResizedCrop)]
        if isinstance(view, nn.Sequential)
        else []
    )
    if not isinstance(view, nn.Sequential) or not crops:
        raise ValueError(
            f"pipeline {name!r} has no random resized crop, so it cannot make local crops; "
            "use local_views=0, or a pipeline such as simclr, mocov2 or byol"
        )
    view[crops[0]] = ops.resized_crop(size, scale)
    return view


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-channel statistics; return them as float tuples."""
    stats = {}
    for name, values in (("mean", mean), ("std", std)):
        try:
            stats[name] = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a sequence of 1 or 3 numbers, got {values!r}") from None
        if len(stats[name]) not in (1, 3) or not all(math.isfinite(v) for v in stats[name]):
            raise ValueError(
                f"{name} must have 1 (grayscale) or 3 (RGB) finite values, got {len(stats[name])}: {values!r}"
            )
    if len(stats["std"]) != len(stats["mean"]):
        raise ValueError(f"std must have as many values as mean ({len(stats['mean'])}), got {len(stats['std'])}")
    if any(v <= 0 for v in stats["std"]):
        raise ValueError(f"std values must be > 0, got {std!r}")
    return stats["mean"], stats["std"]


def options(name: str) -> list[str]:
    """The keyword options :func:`build` accepts for the pipeline ``name``, beyond the image size
    and statistics: ``weak_view``, the multi-crop options and the pipeline's own (e.g. ``min_scale``).

    Args:
        name: one of :func:`available`.

    Returns:
        The option names: ``weak_view``, ``local_views``, ``local_size``, ``local_min_scale``,
        ``local_max_scale``, then the pipeline's own.

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> import augmentations
        >>> options = augmentations.options("simclr")
        >>> options[0], options[1], options[-1]
        ('weak_view', 'local_views', 'jitter_strength')
    """
    pipeline_function = PIPELINES.get(name)
    if pipeline_function is None:
        raise ValueError(f"unknown augmentation pipeline {name!r}; available: {', '.join(PIPELINES)}")
    own = [p for p in inspect.signature(pipeline_function).parameters if p not in ("view", "image_size", "channels")]
    return ["weak_view", *MULTI_CROP_OPTIONS, *own]


#: the multi-crop options of :func:`build`
MULTI_CROP_OPTIONS = ("local_views", "local_size", "local_min_scale", "local_max_scale")
