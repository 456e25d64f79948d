"""Building blocks of the augmentation pipelines: kornia ops configured for an image size and a channel count.

Every op works on float32 batches ``(B, C, H, W)`` with values in ``[0, 1]`` and is built from
kornia, so it runs batched on the device of its input. Random ops draw one set of parameters
per image (crop box, flip, jitter factors, blur sigma, apply/skip), as torchvision does per
call; colour-jitter orders (:class:`ColourJitter`) and AutoAugment sub-policies
(:class:`RandomChoice`) are chosen per image too, where kornia alone would share one per batch.

Size rules shared by all pipelines (the papers' settings, scaled to the image size):

- images of ``SMALL_IMAGE`` pixels or less get no Gaussian blur (SimCLR / BYOL on CIFAR);
  larger ones get a kernel of about 10% of the image side, rounded to an odd size;
- the padding of a padded random crop is 4 pixels at 32 px, scaled with the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kornia import augmentation as K
from kornia.augmentation.auto import AutoAugment
from kornia.augmentation.auto.autoaugment.autoaugment import cifar10_policy, imagenet_policy, svhn_policy
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from torch import nn

SMALL_IMAGE = 32
"""Side in pixels up to which an image counts as small: no blur, CIFAR-10 AutoAugment policy."""

AUTOAUGMENT_POLICIES = {"cifar10": cifar10_policy, "imagenet": imagenet_policy, "svhn": svhn_policy}
"""kornia's AutoAugment policies by name (lists of sub-policies of ``(op, probability, magnitude)``)."""


def blur_kernel_size(image_size: int) -> int | None:
    """Gaussian blur kernel side in pixels for ``image_size``: ~10% of it, odd; ``None`` (no blur) when small.

    96 px -> 9, 224 px -> 23 (BYOL's kernel), 32 px and below -> ``None``.
    """
    if image_size <= SMALL_IMAGE:
        return None
    return (image_size // 10) | 1


def crop_padding(image_size: int) -> int:
    """Padding in pixels of the padded random crop: 4 at 32 px, scaled linearly (96 px -> 12)."""
    return round(4 * image_size / 32)


def resized_crop(image_size: int, scale: tuple[float, float]) -> K.RandomResizedCrop:
    """Random crop of area fraction in ``scale`` and aspect ratio in [3/4, 4/3], resized to ``image_size``.

    The crop box is drawn as ``torchvision.transforms.RandomResizedCrop.get_params`` draws it.
    Crop and resize are one bilinear warp over the whole batch (``cropping_mode="resample"``), which
    maps the corner pixels of the box onto the corner pixels of the output; kornia's default
    ``"slice"`` mode would resize image by image in a Python loop. There is no antialiasing, so a
    crop much larger than ``image_size`` is sampled rather than averaged (torchvision antialiases).
    """
    return K.RandomResizedCrop((image_size, image_size), scale=scale, ratio=(3 / 4, 4 / 3), cropping_mode="resample")


def padded_crop(image_size: int, padding: int) -> K.RandomCrop:
    """Random ``image_size`` crop of the input zero-padded by ``padding`` pixels on each side.

    As ``torchvision.transforms.RandomCrop(image_size, padding=padding)``: the offset is uniform over
    the ``2 * padding + 1`` positions on each axis. The input must be ``image_size`` square (see
    :class:`FitToSize`). Cropping is one batched warp at whole-pixel offsets, which copies the
    values up to float rounding (~1e-6); kornia's ``"slice"`` mode would slice image by image.
    """
    return K.RandomCrop((image_size, image_size), padding=padding, fill=0.0, cropping_mode="resample")


def horizontal_flip() -> K.RandomHorizontalFlip:
    """Mirror left-right with probability 0.5 per image."""
    return K.RandomHorizontalFlip(p=0.5)


@dataclass
class JitterDraw:
    """One call's draw of :class:`ColourJitter` for a batch of ``n`` images.

    Attributes:
        applied: ``(m,)`` indices of the images it changes.
        factors: brightness, contrast, saturation and hue factors, ``(m,)`` each, for those
            images.
        orders: ``(m, S)`` each image's order of the ``S`` steps (indices into
            ``ColourJitter.steps``).
    """

    applied: torch.Tensor
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    orders: torch.Tensor


def _hue_in_turns(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return adjust_hue(images, factor * 2 * math.pi)


#: the four adjustments with torchvision's formulas (kornia's, as ``kornia.augmentation.ColorJitter`` uses them)
JITTER_STEPS = (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
    _hue_in_turns,
)
JITTER_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class ColourJitter(nn.Module):
    """torchvision's ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` on a batch.

    Each image is changed with probability ``p``, with its own factors drawn from torchvision's
    ranges (``[max(0, 1 - b), 1 + b]``, ..., hue ``[-h, h]``) and its own order of the four
    adjustments, as torchvision draws them per call; the adjustments are kornia's
    implementations of torchvision's formulas. A 1-channel batch gets brightness and contrast
    only (saturation and hue are undefined without colour). The images are grouped by the step
    each has at each position, so a call costs at most ``S x S`` adjustments on groups of the
    batch (``S = 4`` steps), not one kornia call per order drawn. ``per_image=False`` draws one
    order per call for the whole batch (kornia's behaviour). Random numbers come from torch's
    global CPU generator, like kornia's. ``forward(images)`` is ``apply_draw(images, sample(B))``.

    Args:
        channels: 1 or 3; a 1-channel batch gets brightness and contrast only.
        brightness: brightness factors are drawn from ``[max(0, 1 - brightness), 1 + brightness]``.
        contrast: contrast factors likewise.
        saturation: saturation factors likewise.
        hue: hue shifts are drawn from ``[-hue, hue]`` (in turns).
        p: probability that an image is changed.
        per_image: draw the order of the adjustments per image (else one per call).
    """

    def __init__(
        self,
        channels: int,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        p: float = 0.8,
        per_image: bool = True,
    ) -> None:
        super().__init__()
        if channels == 1:
            saturation, hue = 0.0, 0.0
        self.steps = (0, 1) if channels == 1 else (0, 1, 2, 3)
        self.ranges = tuple((max(0.0, 1.0 - v), 1.0 + v) for v in (brightness, contrast, saturation)) + ((-hue, hue),)
        self.p = p
        self.per_image = per_image

    def sample(self, n: int) -> JitterDraw:
        """Draw which of ``n`` images change, their factors and their orders."""
        applied = (torch.rand(n) < self.p).nonzero().squeeze(1)
        m = applied.numel()
        brightness, contrast, saturation, hue = (low + (high - low) * torch.rand(m) for low, high in self.ranges)
        if self.per_image:
            orders = torch.rand(m, len(self.steps)).argsort(dim=1)
        else:
            orders = torch.randperm(len(self.steps)).expand(m, -1)
        return JitterDraw(applied, (brightness, contrast, saturation, hue), orders)

    # not ``apply``: nn.Module.apply(fn) recurses into every submodule with that name
    def apply_draw(self, images: torch.Tensor, draw: JitterDraw) -> torch.Tensor:
        """``images`` (B, C, H, W) in [0, 1] changed as ``draw`` says (a new tensor)."""
        out = images.clone()
        if draw.applied.numel() == 0:
            return out
        device = images.device
        applied = draw.applied.to(device)
        x = images[applied].clamp(0.0, 1.0)
        for position in range(len(self.steps)):
            for k, step in enumerate(self.steps):
                factors = draw.factors[step]
                chosen = (draw.orders[:, position] == k).nonzero().squeeze(1)
                if chosen.numel() == 0 or bool((factors[chosen] == JITTER_NEUTRAL[step]).all()):
                    continue
                index = chosen.to(device)
                x[index] = JITTER_STEPS[step](x[index], factors[chosen].to(device, x.dtype))
        out[applied] = x.clamp(0.0, 1.0)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply_draw(images, self.sample(images.shape[0]))

    def extra_repr(self) -> str:
        return f"ranges={self.ranges}, p={self.p}, per_image={self.per_image}"


def colour_jitter(
    channels: int, brightness: float, contrast: float, saturation: float, hue: float, p: float = 0.8
) -> ColourJitter:
    """torchvision's ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)``, with
    factors and order drawn per image (:class:`ColourJitter`)."""
    return ColourJitter(channels, brightness, contrast, saturation, hue, p=p)


def grayscale(channels: int, p: float = 0.2) -> K.RandomGrayscale | None:
    """Convert to grayscale (ITU-R 601 luma, kept as 3 channels) with probability ``p``; none for 1 channel."""
    if channels == 1:
        return None
    return K.RandomGrayscale(p=p)


def gaussian_blur(image_size: int, p: float) -> K.RandomGaussianBlur | None:
    """Gaussian blur with sigma drawn per image from [0.1, 2.0] px, probability ``p``.

    The kernel side is :func:`blur_kernel_size`; ``None`` (no blur) for small images or ``p == 0``.
    Borders are reflected, as in torchvision's ``GaussianBlur``.
    """
    kernel = blur_kernel_size(image_size)
    if kernel is None or p == 0:
        return None
    return K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), border_type="reflect", p=p)


def solarize(p: float) -> K.RandomSolarize | None:
    """torchvision's ``RandomSolarize(threshold=0.5, p)``: values >= 0.5 become ``1 - value``.

    ``None`` (no op) when ``p == 0``.
    """
    if p == 0:
        return None
    return K.RandomSolarize(thresholds=(0.5, 0.5), additions=(0.0, 0.0), p=p)


def auto_augment(channels: int, policy: str) -> RandomChoice:
    """AutoAugment with the named policy (``"cifar10"``, ``"imagenet"`` or ``"svhn"``), as torchvision's.

    One sub-policy is chosen uniformly per image, as torchvision does (:class:`RandomChoice` over
    one kornia ``AutoAugment`` per sub-policy; kornia alone chooses one per call, shared by the
    batch); the magnitudes and apply decisions of its ops are drawn per image. For 1-channel
    batches the ``"color"`` (saturation) ops are dropped from the policy: they are the identity on
    gray images and kornia's implementation requires 3 channels.
    """
    sub_policies = AUTOAUGMENT_POLICIES[policy]
    if channels == 1:
        sub_policies = [[op for op in sub_policy if op[0] != "color"] for sub_policy in sub_policies]
    return RandomChoice([AutoAugment([sub_policy]) for sub_policy in sub_policies])


class RandomChoice(nn.Module):
    """Apply one of ``options`` to each image, chosen uniformly and independently per image.

    Input and output ``(B, C, H, W)``; every option must keep the shape. Images are grouped by
    their choice, so a call costs one call of each option that was chosen, on its images only.
    The choices are drawn from torch's global CPU generator (the pipeline's random stream), like
    kornia's parameters.

    Args:
        options: modules mapping ``(b, C, H, W)`` to the same shape.
        per_image: ``False`` chooses one option per call for the whole batch (kornia's behaviour
            for colour-jitter orders and AutoAugment sub-policies): cheaper, less varied.
    """

    def __init__(self, options: Sequence[nn.Module], per_image: bool = True) -> None:
        super().__init__()
        if not options:
            raise ValueError("RandomChoice needs at least one option")
        self.options = nn.ModuleList(options)
        self.per_image = per_image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = len(self.options)
        if not self.per_image or images.shape[0] == 1:
            return self.options[int(torch.randint(count, ()))](images)
        choice = torch.randint(count, (images.shape[0],))
        out = torch.empty_like(images)
        for option in torch.unique(choice).tolist():
            index = (choice == option).nonzero().squeeze(1).to(images.device)
            out[index] = self.options[option](images[index])
        return out

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"


class FitToSize(nn.Module):
    """Resize the shorter side to ``size`` and centre-crop to ``(size, size)``, as torchvision's
    ``Resize(size)`` + ``CenterCrop(size)``.

    Input ``(B, C, H, W)`` float in [0, 1]; output ``(B, C, size, size)``. Bilinear, antialiased when
    shrinking; a batch that is already ``size`` square is returned as is.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.resize = K.Resize(size, side="short", align_corners=False, antialias=True)
        self.crop = K.CenterCrop(size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] == (self.size, self.size):
            return images
        return self.crop(self.resize(images))


def sequential(*ops: nn.Module | None) -> nn.Sequential:
    """Chain the given ops, leaving out the ``None`` ones (ops that do not apply at this size)."""
    return nn.Sequential(*(op for op in ops if op is not None))
