"""The recipes' random ops against torchvision, the reference the published recipes were written in.

Distributions are compared on thousands of draws with scipy's two-sample Kolmogorov-Smirnov,
binomial and chi-square tests at a significance of 1e-3; seeds are fixed, so the tests are
deterministic. Where possible the draw is read back from the op's output (a crop box from a
coordinate image, a flip by comparison with the mirror image), not from kornia's parameters; the numerical checks replay
kornia's last draw (``module._params``) through torchvision's functional ops.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from kornia import augmentation as K
from kornia.augmentation.auto import AutoAugment
from scipy import stats
from torch import nn

import augmentations

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
GRAY = {"mean": (0.48,), "std": (0.24,)}
ALPHA = 1e-3
REPLAYED = 100  # images per numerical replay through torchvision (one call per image)

# The published settings, written out independently of the recipes.
CROP_MIN_SCALE = {"simclr": 0.08, "mocov2": 0.2, "byol": 0.08, "simaug": 0.2}
JITTER = {
    "simclr": (0.4, 0.4, 0.4, 0.1),
    "mocov2": (0.4, 0.4, 0.4, 0.1),
    "byol": (0.4, 0.4, 0.2, 0.1),
    "simaug": (0.4, 0.4, 0.4, 0.1),
}
# (recipe, view) -> blur probability at 96 px
BLUR = {("simclr", 0): 0.5, ("mocov2", 0): 0.5, ("byol", 0): 1.0, ("byol", 1): 0.1}


pytestmark = pytest.mark.usefixtures("one_thread")


def op(name: str, kind: type, *, view: int = 0, image_size: int = 32, stats_: dict = RGB) -> nn.Module:
    """The op of type ``kind`` in view ``view`` of recipe ``name``."""
    pipeline = augmentations.build(name, image_size=image_size, num_views=2, **stats_)
    return next(module for module in pipeline.views[view].modules() if isinstance(module, kind))


def coordinate_images(n: int, height: int, width: int) -> torch.Tensor:
    """(n, 3, H, W) images whose channel 0 is x / (W - 1) and channel 1 is y / (H - 1)."""
    ys, xs = torch.meshgrid(torch.arange(height) / (height - 1), torch.arange(width) / (width - 1), indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)]).expand(n, 3, height, width).contiguous()


def assert_same_distribution(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    p_value = stats.ks_2samp(ours.double().numpy(), reference.double().numpy()).pvalue
    assert p_value > ALPHA, f"{what}: KS p = {p_value:.2g}"


def assert_rate(hits: torch.Tensor, rate: float, what: str) -> None:
    k, n = int(hits.sum()), hits.numel()
    p_value = stats.binomtest(k, n, rate).pvalue
    assert p_value > ALPHA, f"{what}: {k}/{n} = {k / n:.3f}, expected {rate} (binomial p = {p_value:.2g})"


def replayed_gate(module: nn.Module) -> torch.Tensor:
    """Which images kornia's last call of ``module`` transformed."""
    return module._params["batch_prob"] > 0.5


@pytest.mark.parametrize("name", sorted(CROP_MIN_SCALE))
def test_resized_crop_boxes_follow_torchvision(name):
    n, height, width = 4000, 40, 48
    crop = op(name, K.RandomResizedCrop)
    torch.manual_seed(0)
    out = crop(coordinate_images(n, height, width))
    # The warp maps the box's corner pixels onto the output's corner pixels.
    x0, x1 = (out[:, 0, 0, 0] * (width - 1)).round(), (out[:, 0, 0, -1] * (width - 1)).round()
    y0, y1 = (out[:, 1, 0, 0] * (height - 1)).round(), (out[:, 1, -1, 0] * (height - 1)).round()
    widths, heights = x1 - x0 + 1, y1 - y0 + 1

    image, scale = torch.empty(3, height, width), (CROP_MIN_SCALE[name], 1.0)
    draws = [T.RandomResizedCrop.get_params(image, scale=scale, ratio=(3 / 4, 4 / 3)) for _ in range(n)]
    boxes = torch.tensor(draws, dtype=torch.float64)
    top, left, tv_heights, tv_widths = boxes.unbind(1)

    assert bool(((x0 >= 0) & (x1 <= width - 1) & (y0 >= 0) & (y1 <= height - 1)).all())
    assert_same_distribution(widths * heights / (height * width), tv_widths * tv_heights / (height * width), "area")
    assert_same_distribution(widths / heights, tv_widths / tv_heights, "aspect ratio")
    assert_same_distribution(x0, left, "left")
    assert_same_distribution(y0, top, "top")


@pytest.mark.parametrize("name", ["simclr", "mocov2", "byol", "supcon", "simaug"])
def test_flip_mirrors_half_of_the_images(name):
    flip = op(name, K.RandomHorizontalFlip)
    images = torch.rand(4000, 3, 2, 5)
    torch.manual_seed(0)
    out = flip(images)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((mirrored | (out == images).flatten(1).all(1)).all())
    assert_rate(mirrored, 0.5, "flip rate")


@pytest.mark.parametrize("name", sorted(JITTER))
def test_jitter_factors_follow_torchvision(name):
    n = 3000
    jitter = op(name, K.ColorJitter)
    torch.manual_seed(0)
    ours = jitter.forward_parameters(torch.Size((n, 3, 4, 4)))
    reference = T.ColorJitter(*JITTER[name])
    ranges = (reference.brightness, reference.contrast, reference.saturation, reference.hue)
    draws = [T.ColorJitter.get_params(*ranges) for _ in range(n)]
    for index, key in enumerate(("brightness", "contrast", "saturation", "hue"), start=1):
        tv = torch.tensor([draw[index] for draw in draws])
        assert_same_distribution(ours[f"{key}_factor"], tv, key)


def test_grayscale_jitter_leaves_out_saturation_and_hue():
    jitter = op("simclr", K.ColorJitter, stats_=GRAY)
    params = jitter.forward_parameters(torch.Size((500, 1, 4, 4)))
    assert bool((params["saturation_factor"] == 1).all() and (params["hue_factor"] == 0).all())
    assert float(params["brightness_factor"].std()) > 0.1


@pytest.mark.parametrize(
    ("name", "stats_"),
    [(name, RGB) for name in sorted(JITTER)] + [("simclr", GRAY)],
    ids=[f"{name}-rgb" for name in sorted(JITTER)] + ["simclr-gray"],
)
def test_jitter_applies_to_eighty_percent_with_torchvision_formulas(name, stats_):
    channels = len(stats_["mean"])
    jitter = op(name, K.ColorJitter, stats_=stats_)
    images = torch.rand(2000, channels, 4, 4)
    torch.manual_seed(0)
    out = jitter(images)

    applied = replayed_gate(jitter)
    assert_rate(applied, 0.8, "jitter rate")
    assert torch.equal(out[~applied], images[~applied])
    checked = applied.nonzero().squeeze(1)[:REPLAYED]
    expected = images[checked]
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    for step in jitter._params["order"].tolist():
        factors = jitter._params[keys[step]][checked]
        if channels == 1 and step >= 2:
            assert bool((factors == (0 if step == 3 else 1)).all())
            continue
        expected = torch.stack([adjust[step](image, float(f)) for image, f in zip(expected, factors)])
    torch.testing.assert_close(out[checked], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_jitter_with_fixed_factors_matches_torchvision_functional(seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(8, 3, 16, 16, generator=generator)
    b, c, s = (0.6 + 0.8 * torch.rand(3, generator=generator)).tolist()
    h = float(0.2 * torch.rand(1, generator=generator) - 0.1)
    order = torch.randperm(4, generator=generator).tolist()
    # Equal range ends fix each factor; a fixed order fixes the sequence.
    jitter = K.ColorJitter((b, b), (c, c), (s, s), (h, h), p=1.0, order=order)

    expected = images
    for step in order:
        expected = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[step](
            expected, (b, c, s, h)[step]
        )
    torch.testing.assert_close(jitter(images), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(JITTER))
def test_grayscale_applies_to_twenty_percent_with_torchvision_weights(name):
    grayscale = op(name, K.RandomGrayscale)
    images = torch.rand(4000, 3, 3, 3)
    torch.manual_seed(0)
    out = grayscale(images)

    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert_rate(gray, 0.2, "grayscale rate")
    assert torch.equal(out[~gray], images[~gray])
    torch.testing.assert_close(out[gray], TF.rgb_to_grayscale(images[gray], num_output_channels=3), atol=2e-4, rtol=0)


@pytest.mark.parametrize(("name", "view"), sorted(BLUR))
def test_blur_matches_torchvision_gaussian_blur(name, view):
    blur = op(name, K.RandomGaussianBlur, view=view, image_size=96)
    assert blur.flags["kernel_size"] == (9, 9)  # 10% of 96 px, odd
    images = torch.rand(1000, 3, 12, 12)
    torch.manual_seed(0)
    out = blur(images)

    applied = replayed_gate(blur)
    assert_rate(applied, BLUR[(name, view)], "blur rate")
    assert torch.equal(out[~applied], images[~applied])
    sigmas = blur._params["sigma"]
    tv_sigmas = torch.tensor([T.GaussianBlur.get_params(0.1, 2.0) for _ in range(len(sigmas))])
    assert_same_distribution(sigmas, tv_sigmas, "sigma")
    checked = applied.nonzero().squeeze(1)[:REPLAYED]
    expected = torch.stack(
        [TF.gaussian_blur(image, [9, 9], [float(sigma)] * 2) for image, sigma in zip(images[checked], sigmas[checked])]
    )
    torch.testing.assert_close(out[checked], expected, atol=1e-5, rtol=0)


def test_no_blur_at_32_px_and_kernel_scales_with_size():
    for name in augmentations.available():
        pipeline = augmentations.build(name, image_size=32, **RGB)
        assert not any(isinstance(m, K.RandomGaussianBlur) for m in pipeline.modules())
    assert op("simclr", K.RandomGaussianBlur, image_size=224).flags["kernel_size"] == (23, 23)  # BYOL's 23


def test_byol_solarizes_twenty_percent_of_the_second_view_as_torchvision():
    solarize = op("byol", K.RandomSolarize, view=1)
    images = torch.rand(4000, 3, 3, 3)
    torch.manual_seed(0)
    out = solarize(images)

    applied = replayed_gate(solarize)
    assert_rate(applied, 0.2, "solarize rate")
    assert torch.equal(out[~applied], images[~applied])
    torch.testing.assert_close(out[applied], TF.solarize(images[applied], 0.5), atol=0, rtol=0)


@pytest.mark.parametrize(("image_size", "padding"), [(32, 4), (16, 2)])
def test_supcon_crop_is_torchvision_padded_random_crop(image_size, padding):
    crop = op("supcon", K.RandomCrop, image_size=image_size)
    n = 2000
    images = torch.rand(n, 3, image_size, image_size)
    torch.manual_seed(0)
    out = crop(images)

    padded = nn.functional.pad(images, [padding] * 4)
    positions = 2 * padding + 1
    offsets = [(dy, dx) for dy in range(positions) for dx in range(positions)]
    windows = [padded[..., dy : dy + image_size, dx : dx + image_size] for dy, dx in offsets]
    matches = torch.stack([(out - window).abs().amax(dim=(1, 2, 3)) < 1e-5 for window in windows], dim=1)
    assert bool((matches.sum(1) == 1).all()), "every crop is one window of the zero-padded image"
    offset = matches.float().argmax(1)
    for what, position in (("top", offset // positions), ("left", offset % positions)):
        counts = torch.bincount(position, minlength=positions)
        # torchvision's RandomCrop.get_params draws each offset uniformly from the 2 * padding + 1 positions.
        p_value = stats.chisquare(counts.numpy()).pvalue
        assert p_value > ALPHA, f"{what} offset counts {counts.tolist()} not uniform (p = {p_value:.2g})"


@pytest.mark.parametrize(
    ("image_size", "policy"), [(32, T.AutoAugmentPolicy.CIFAR10), (96, T.AutoAugmentPolicy.IMAGENET)]
)
@pytest.mark.parametrize("stats_", [RGB, GRAY], ids=["rgb", "gray"])
def test_supcon_autoaugment_policy_is_the_published_one(image_size, policy, stats_):
    auto_augment = op("supcon", AutoAugment, image_size=image_size, stats_=stats_)
    # kornia calls torchvision's "Color" (saturation) op "Saturate".
    ours = [
        [(type(operation).__name__.replace("Saturate", "Color"), round(float(operation.probability), 3))
         for operation in sub_policy.children()]
        for sub_policy in auto_augment.children()
    ]
    published = [[(name, p) for name, p, _ in sub] for sub in T.AutoAugment(policy).policies]
    if len(stats_["mean"]) == 1:  # colour (saturation) is the identity on gray images
        published = [[(name, p) for name, p in sub if name != "Color"] for sub in published]
    assert ours == published


@pytest.mark.parametrize(("height", "width"), [(24, 30), (30, 24), (32, 32)])
def test_eval_matches_torchvision_resize_and_center_crop(height, width):
    images = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8)
    (view,) = augmentations.build("eval", image_size=32, num_views=1, **RGB)(images)
    reference = T.Compose([T.Resize(32, antialias=True), T.CenterCrop(32), T.Normalize(**RGB)])
    torch.testing.assert_close(view, reference(images.float() / 255), atol=1e-5, rtol=0)
