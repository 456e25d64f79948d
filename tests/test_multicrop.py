"""Multi-crop: local crops from the augmentation layer, and the method base's one backbone pass per
resolution; the single-size pipeline and embedding stay as they were."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import augmentations
from augmentations import pipelines
from augmentations.pipeline import Pipeline
from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.methods import OptimConfig, method_class
from tcl_ssl.methods.base import backbone_passes, split_crops
from tcl_ssl.preflight import check_run

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
PIXELS = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # views in [0, 1] pixel units

pytestmark = pytest.mark.usefixtures("one_thread")


def uint8_images(batch: int, height: int = 40, width: int = 36, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)


def test_local_crops_follow_the_global_views_with_their_size_dtype_and_device():
    pipeline = augmentations.build("byol", image_size=32, num_views=2, local_views=3, seed=0, **RGB)
    batch = uint8_images(4)
    views = pipeline(batch)
    assert (pipeline.num_views, pipeline.global_views, pipeline.local_views, pipeline.local_size) == (5, 2, 3, 14)
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 14, 14)] * 3
    assert all(v.dtype == torch.float32 and v.device == batch.device for v in views)
    global_views, local_views = split_crops(views)
    assert len(global_views) == 2 and len(local_views) == 3 and global_views[1] is views[1]
    assert not torch.equal(views[2], views[3])  # each local crop is its own draw


@pytest.mark.parametrize(("image_size", "expected"), [(32, 14), (28, 12), (224, 96)])
def test_default_local_size_is_the_papers_96_of_224(image_size, expected):
    pipeline = augmentations.build("simclr", image_size=image_size, local_views=1, **RGB)
    assert pipeline.local_size == expected == round(image_size * 96 / 224)


def test_weak_view_stays_with_the_full_size_views():
    pipeline = augmentations.build("simclr", image_size=32, weak_view=True, local_views=2, local_size=16, **RGB)
    views = pipeline(uint8_images(2))
    assert [v.shape[-1] for v in views] == [32, 32, 32, 16, 16] and pipeline.global_views == 3


def test_without_local_crops_the_pipeline_is_the_single_size_one_bitwise():
    """The pipeline built before multi-crop existed (the views' functions in a Pipeline), the
    default build, an explicit local_views=0 and the global views of a multi-crop pipeline
    with the same seed: the same views, bit for bit (local crops are drawn after them)."""
    batch = uint8_images(8)
    reference = Pipeline([pipelines.byol(i, image_size=32, channels=3) for i in range(2)], image_size=32, seed=3, **RGB)
    expected = reference(batch)
    for options in ({}, {"local_views": 0}, {"local_views": 4, "local_size": 16}):
        views = augmentations.build("byol", image_size=32, seed=3, **RGB, **options)(batch)
        assert len(views) == 2 + options.get("local_views", 0)
        for view, reference_view in zip(views, expected):
            assert torch.equal(view, reference_view)


def test_same_seed_same_local_crops_other_seed_other_ones():
    batch = uint8_images(6)
    first, second, other = (
        augmentations.build("simclr", image_size=32, local_views=2, local_size=16, seed=seed, **RGB)(batch)
        for seed in (7, 7, 8)
    )
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[2], other[2]) and not torch.equal(first[3], other[3])


def test_local_crops_cover_the_local_area_range():
    """On a horizontal ramp, a crop's span of values is its width as a fraction of the image:
    sqrt(area * ratio) with area in [0.05, 0.14] and ratio in [3/4, 4/3] for local crops."""
    width = 240
    ramp = torch.linspace(0, 1, width).expand(64, 3, width, width).contiguous()
    pipeline = augmentations.build(
        "crop-flip", image_size=32, local_views=4, local_size=16, min_scale=0.5, seed=0, **PIXELS
    )
    views = pipeline(ramp)
    spans = [(v.amax(dim=(1, 2, 3)) - v.amin(dim=(1, 2, 3))) * width / (width - 1) for v in views]
    low, high = math.sqrt(0.05 * 3 / 4), math.sqrt(0.14 * 4 / 3)
    for span in spans[2:]:  # the sample grid spans (size - 1) / size of the box, at most
        assert bool((span <= high + 1e-4).all()) and bool((span >= low * 15 / 16 - 1e-4).all()), span
    for span in spans[:2]:  # global crops: area 0.5-1
        assert bool((span >= math.sqrt(0.5 * 3 / 4) * 31 / 32 - 1e-4).all())


def test_the_local_scale_options_set_the_local_crop():
    pipeline = augmentations.build(
        "byol", image_size=32, local_views=1, local_size=12, local_min_scale=0.1, local_max_scale=0.3, **RGB
    )
    crop = pipeline.views[2][0]
    assert crop.flags["size"] == (12, 12) and tuple(crop._param_generator.scale) == pytest.approx((0.1, 0.3))
    assert tuple(pipeline.views[0][0]._param_generator.scale) == pytest.approx((0.08, 1.0))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"local_views": -1}, "local_views must be an integer >= 0, got -1"),
        ({"local_views": 2, "local_size": 32}, r"local_size must be smaller than image_size \(32\), got 32"),
        ({"local_views": 2, "local_size": 0}, "local_size must be an integer >= 1, got 0"),
        ({"local_views": 2, "local_min_scale": 0.3, "local_max_scale": 0.2}, "must be at most local_max_scale"),
        ({"local_views": 2, "local_max_scale": 1.5}, r"local_max_scale must be a number in \(0, 1\]"),
    ],
)
def test_bad_multi_crop_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        augmentations.build("simclr", image_size=32, **RGB, **options)


@pytest.mark.parametrize("name", ["supcon", "eval"])
def test_pipelines_without_a_resized_crop_make_no_local_crops(name):
    with pytest.raises(ValueError, match=f"pipeline '{name}' has no random resized crop"):
        augmentations.build(name, image_size=32, local_views=2, **RGB)
    augmentations.build(name, image_size=32, **RGB)  # without local crops: as before


def test_the_multi_crop_options_are_listed():
    assert augmentations.options("byol")[:5] == [
        "weak_view",
        "local_views",
        "local_size",
        "local_min_scale",
        "local_max_scale",
    ]


class CountingBackbone(nn.Module):
    """Mean-pooled 1x1 convolution (any input size, no batch statistics); records each call's input shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(images.shape))
        return self.conv(images).mean(dim=(2, 3))


def test_one_backbone_pass_per_resolution_in_view_order():
    torch.manual_seed(0)
    backbone = CountingBackbone()
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(4, 3, 14, 14) for _ in range(3)]
    features = backbone_passes(backbone, views)
    assert backbone.calls == [(8, 3, 32, 32), (12, 3, 14, 14)]
    with torch.no_grad():
        expected = torch.cat([backbone.conv(v).mean(dim=(2, 3)) for v in views])
    torch.testing.assert_close(features, expected)


def test_single_size_embedding_is_the_one_concatenated_pass_bitwise():
    torch.manual_seed(0)
    backbone = CountingBackbone()
    views = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    features = backbone_passes(backbone, views)
    assert backbone.calls == [(12, 3, 32, 32)]
    assert torch.equal(features, backbone(torch.cat(views)))


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_multi_crop_methods_probe_view_zero_and_give_the_teacher_only_global_views(name):
    torch.manual_seed(0)
    backbone = CountingBackbone()
    augment = augmentations.build("byol", image_size=32, local_views=2, local_size=16, seed=0, **RGB)
    options = {"hidden_dim": 16, "output_dim": 8} | ({"queue_size": 0} if name == "swav" else {})
    method = method_class(name)(backbone, 5, augment, optim=OptimConfig(lr=0.1), **options)
    views = augment(uint8_images(4))
    loss = method.training_loss(views, None)
    assert loss.shape == () and torch.isfinite(loss)
    assert backbone.calls == [(8, 3, 32, 32), (8, 3, 16, 16)]  # the online network: both resolutions
    with torch.no_grad():
        torch.testing.assert_close(method._probe_features, backbone.conv(views[0]).mean(dim=(2, 3)))
    if name == "dino":  # the teacher (a copy) saw the global views only
        assert method.backbone_momentum.calls == [(8, 3, 32, 32)]


def test_methods_without_multi_crop_refuse_local_crops():
    message = "method 'byol' takes no local crops \\(multi-crop\\), got local_views=2"
    with pytest.raises(ValueError, match=message):
        method_class("byol").check_setting(False, 2, local_views=2)
    augment = augmentations.build("byol", image_size=32, local_views=2, **RGB)
    with pytest.raises(ValueError, match=message):
        method_class("byol")(nn.Flatten(), 8, augment)
    for name in ("dino", "swav"):
        method_class(name).check_setting(False, 2, local_views=6)


def test_preflight_refuses_local_crops_for_a_method_without_them(tmp_path):
    config = PretrainConfig.build(method="simclr", augmentation_options={"local_views": 2}, out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="method 'simclr' takes no local crops"):
        check_run(config)
    with pytest.raises(ConfigError, match="local_size must be smaller than image_size"):
        check_run(config.replace(method="dino", augmentation_options={"local_views": 2, "local_size": 40}))
    check_run(config.replace(method="dino"))
