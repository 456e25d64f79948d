"""The pipelines' random ops against torchvision, the reference the published pipelines were written in.

Distributions are compared on thousands of draws with scipy's two-sample Kolmogorov-Smirnov,
binomial and chi-square tests at a significance of 1e-3; seeds are fixed, so the tests are
deterministic. Where possible the draw is read back from the op's output (a crop box from a
coordinate image, a flip by comparison with the mirror image), not from kornia's parameters; the numerical checks replay
kornia's last draw (``module._params``), or the colour jitter's own draw (``ColourJitter.sample``),
through torchvision's functional ops.
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
from augmentations.ops import ColourJitter, JitterDraw, RandomChoice

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
GRAY = {"mean": (0.48,), "std": (0.24,)}
ALPHA = 1e-3
REPLAYED = 100  # images per numerical replay through torchvision (one call per image)

# The published settings, written out independently of the pipelines.
CROP_MIN_SCALE = {"simclr": 0.08, "mocov2": 0.2, "byol": 0.08, "simaug": 0.2}
JITTER = {
    "simclr": (0.4, 0.4, 0.4, 0.1),
    "mocov2": (0.4, 0.4, 0.4, 0.1),
    "byol": (0.4, 0.4, 0.2, 0.1),
    "simaug": (0.4, 0.4, 0.4, 0.1),
}
# (pipeline, view) -> blur probability at 96 px
BLUR = {("simclr", 0): 0.5, ("mocov2", 0): 0.5, ("byol", 0): 1.0, ("byol", 1): 0.1}


pytestmark = pytest.mark.usefixtures("one_thread")


def op(name: str, kind: type, *, view: int = 0, image_size: int = 32, stats_: dict = RGB) -> nn.Module:
    """The op of type ``kind`` in view ``view`` of pipeline ``name``."""
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
    jitter = op(name, ColourJitter)
    jitter.p = 1.0
    torch.manual_seed(0)
    draw = jitter.sample(3000)
    reference = T.ColorJitter(*JITTER[name])
    ranges = (reference.brightness, reference.contrast, reference.saturation, reference.hue)
    draws = [T.ColorJitter.get_params(*ranges) for _ in range(3000)]
    for index, key in enumerate(("brightness", "contrast", "saturation", "hue")):
        tv = torch.tensor([d[index + 1] for d in draws])
        assert_same_distribution(draw.factors[index], tv, key)


def test_grayscale_jitter_leaves_out_saturation_and_hue():
    jitter = op("simclr", ColourJitter, stats_=GRAY)
    assert jitter.steps == (0, 1)
    draw = jitter.sample(500)
    assert bool((draw.factors[2] == 1).all() and (draw.factors[3] == 0).all())
    assert float(draw.factors[0].std()) > 0.1
    assert draw.orders.shape == (len(draw.applied), 2)


def _torchvision_jitter(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for step in order:
        image = adjust[step](image, factors[step])
    return image


@pytest.mark.parametrize(
    ("name", "stats_"),
    [(name, RGB) for name in sorted(JITTER)] + [("simclr", GRAY)],
    ids=[f"{name}-rgb" for name in sorted(JITTER)] + ["simclr-gray"],
)
def test_jitter_applies_to_eighty_percent_with_torchvision_formulas(name, stats_):
    channels = len(stats_["mean"])
    jitter = op(name, ColourJitter, stats_=stats_)
    images = torch.rand(2000, channels, 4, 4)
    torch.manual_seed(0)
    draw = jitter.sample(len(images))
    torch.manual_seed(0)
    out = jitter(images)
    torch.testing.assert_close(out, jitter.apply_draw(images, draw), atol=0, rtol=0)  # forward = sample + apply_draw

    applied = torch.zeros(len(images), dtype=torch.bool)
    applied[draw.applied] = True
    assert_rate(applied, 0.8, "jitter rate")
    assert torch.equal(out[~applied], images[~applied])
    for row in range(REPLAYED):  # each image with its own factors and its own order, through torchvision
        index = int(draw.applied[row])
        factors = [float(f[row]) for f in draw.factors]
        order = [jitter.steps[k] for k in draw.orders[row].tolist()]
        expected = _torchvision_jitter(images[index], factors, order)
        torch.testing.assert_close(out[index], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_jitter_with_fixed_factors_matches_torchvision_functional(seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(8, 3, 16, 16, generator=generator)
    b, c, s = (0.6 + 0.8 * torch.rand(3, generator=generator)).tolist()
    h = float(0.2 * torch.rand(1, generator=generator) - 0.1)
    order = torch.randperm(4, generator=generator)
    jitter = ColourJitter(3, 0.4, 0.4, 0.4, 0.1)
    draw = JitterDraw(torch.arange(8), tuple(torch.full((8,), v) for v in (b, c, s, h)), order.expand(8, -1))
    expected = torch.stack([_torchvision_jitter(image, [b, c, s, h], order.tolist()) for image in images])
    torch.testing.assert_close(jitter.apply_draw(images, draw), expected, atol=1e-4, rtol=0)


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
    pipeline = augmentations.build("supcon", image_size=image_size, num_views=1, **stats_)
    # One single-sub-policy AutoAugment per sub-policy, in the policy's order.
    sub_policies = [next(m.children()) for m in pipeline.views[0].modules() if isinstance(m, AutoAugment)]
    # kornia calls torchvision's "Color" (saturation) op "Saturate".
    ours = [
        [
            (type(operation).__name__.replace("Saturate", "Color"), round(float(operation.probability), 3))
            for operation in sub_policy.children()
        ]
        for sub_policy in sub_policies
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


def _marking_options(count: int) -> list[nn.Module]:
    """Options that add their own index to the image, so the output tells which one ran."""

    class Add(nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images + self.value

    return [Add(float(k)) for k in range(count)]


def test_random_choice_draws_uniformly_and_independently_per_image():
    choice = RandomChoice(_marking_options(24))
    torch.manual_seed(0)
    chosen = torch.cat([choice(torch.zeros(100, 1, 2, 2))[:, 0, 0, 0].long() for _ in range(40)])
    counts = torch.bincount(chosen, minlength=24)
    assert stats.chisquare(counts.numpy()).pvalue > ALPHA
    # independence: consecutive images agree at the chance rate 1/24
    assert_rate(chosen[1:] == chosen[:-1], 1 / 24, "same choice as the previous image")


def test_random_choice_per_batch_shares_one_choice():
    choice = RandomChoice(_marking_options(24), per_image=False)
    torch.manual_seed(0)
    firsts = []
    for _ in range(200):
        out = choice(torch.zeros(50, 1, 2, 2))[:, 0, 0, 0]
        assert bool((out == out[0]).all())
        firsts.append(int(out[0]))
    assert stats.chisquare(torch.bincount(torch.tensor(firsts), minlength=24).numpy()).pvalue > ALPHA


@pytest.mark.parametrize(("stats_", "orders"), [(RGB, 24), (GRAY, 2)], ids=["rgb", "gray"])
@pytest.mark.parametrize("per_image", [True, False])
def test_jitter_order_is_chosen_among_every_order_of_the_steps(stats_, orders, per_image):
    pipeline = augmentations.build("simclr", image_size=32, per_image_choices=per_image, **stats_)
    (jitter,) = [m for m in pipeline.views[0].modules() if isinstance(m, ColourJitter)]
    assert jitter.per_image is per_image and jitter.p == 0.8
    torch.manual_seed(0)
    if per_image:
        rows = [tuple(row) for row in jitter.sample(40 * orders * 10).orders.tolist()]
    else:
        rows = []
        for _ in range(40 * orders):
            draw = jitter.sample(20)
            assert bool((draw.orders == draw.orders[0]).all())  # one order for the whole batch
            rows.append(tuple(draw.orders[0].tolist()))
    kinds = sorted(set(rows))
    assert len(kinds) == orders and all(sorted(kind) == list(range(len(jitter.steps))) for kind in kinds)
    counts = [rows.count(kind) for kind in kinds]
    assert stats.chisquare(counts).pvalue > ALPHA


def test_per_image_jitter_orders_give_torchvisions_spread_within_a_batch():
    """Where brightness clips, brightness-then-contrast and contrast-then-brightness differ; the
    share of images whose brightness step came first is 1/2 per image (torchvision), not 0 or 1."""
    pipeline = augmentations.build("simclr", image_size=8, **GRAY)
    (jitter,) = [m for m in pipeline.views[0].modules() if isinstance(m, ColourJitter)]
    jitter.ranges = ((1.8, 1.8), (0.5, 0.5), (1.0, 1.0), (0.0, 0.0))  # brightness x1.8, contrast x0.5
    jitter.p = 1.0
    images = torch.cat([torch.full((800, 1, 8, 4), 0.2), torch.full((800, 1, 8, 4), 0.8)], dim=-1)
    torch.manual_seed(0)
    out = jitter(images)
    b_then_c = TF.adjust_contrast(TF.adjust_brightness(images[:1], 1.8), 0.5)
    c_then_b = TF.adjust_brightness(TF.adjust_contrast(images[:1], 0.5), 1.8)
    first = (out - b_then_c).flatten(1).abs().amax(1) < 1e-4
    second = (out - c_then_b).flatten(1).abs().amax(1) < 1e-4
    assert bool((first ^ second).all())  # every image got exactly one of the two orders
    assert_rate(first, 0.5, "brightness before contrast")
