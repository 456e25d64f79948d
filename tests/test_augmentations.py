"""Contract of ``augmentations.build`` and ``Pipeline``: views, normalisation, seeding, devices, errors."""

from __future__ import annotations

import pytest
import torch
from kornia import augmentation as K
from kornia.augmentation.auto import AutoAugment

import augmentations
from augmentations.ops import ColourJitter

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
GRAY = {"mean": (0.48,), "std": (0.24,)}
RANDOM_PIPELINES = [name for name in augmentations.available() if name != "eval"]


pytestmark = pytest.mark.usefixtures("one_thread")


def uint8_images(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images (B, C, H, W) from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, height, width), generator=generator, dtype=torch.uint8)


def unnormalise(view: torch.Tensor, stats: dict) -> torch.Tensor:
    """Pixels in [0, 1] of a normalised view (B, C, H, W)."""
    mean = torch.tensor(stats["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"]).view(1, -1, 1, 1)
    return view * std + mean


def test_available_names_the_seven_pipelines():
    assert augmentations.available() == ["simclr", "mocov2", "byol", "supcon", "simaug", "crop-flip", "eval"]


@pytest.mark.parametrize("image_size", [32, 96])
@pytest.mark.parametrize("stats", [RGB, GRAY], ids=["rgb", "gray"])
@pytest.mark.parametrize("name", augmentations.available())
def test_views_have_the_promised_shape_dtype_device_and_range(name, stats, image_size):
    channels = len(stats["mean"])
    pipeline = augmentations.build(name, image_size=image_size, num_views=3, weak_view=True, seed=0, **stats)
    batch = uint8_images(4, channels, 40, 36)  # neither square nor image_size

    views = pipeline(batch)

    assert isinstance(views, list)
    assert len(views) == pipeline.num_views == 4
    assert pipeline.image_size == image_size
    for view in views:
        assert view.shape == (4, channels, image_size, image_size)
        assert view.dtype == torch.float32
        assert view.device == batch.device
        pixels = unnormalise(view, stats)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    if name != "eval":
        assert not torch.equal(views[0], views[1])


@pytest.mark.parametrize("stats", [RGB, GRAY], ids=["rgb", "gray"])
def test_eval_normalises_with_mean_and_std(stats):
    channels = len(stats["mean"])
    batch = uint8_images(5, channels, 32, 32)
    pipeline = augmentations.build("eval", image_size=32, num_views=2, **stats)

    views = pipeline(batch)

    mean = torch.tensor(stats["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"]).view(1, -1, 1, 1)
    expected = (batch.double() / 255 - mean) / std
    for view in views:
        torch.testing.assert_close(view.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", augmentations.available())
def test_uint8_and_float_input_give_the_same_views(name):
    batch = uint8_images(4, 3, 32, 32)
    as_uint8 = augmentations.build(name, image_size=32, seed=3, **RGB)
    as_float = augmentations.build(name, image_size=32, seed=3, **RGB)

    for a, b in zip(as_uint8(batch), as_float(batch.float() / 255)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_float_input_is_not_modified():
    batch = uint8_images(4, 3, 32, 32).float() / 255
    before = batch.clone()
    for name in augmentations.available():
        augmentations.build(name, image_size=32, weak_view=True, **RGB)(batch)
    assert torch.equal(batch, before)


@pytest.mark.parametrize("name", RANDOM_PIPELINES)
def test_same_seed_gives_the_same_sequence_of_views(name):
    batch = uint8_images(4, 3, 32, 32)
    first = augmentations.build(name, image_size=32, seed=7, **RGB)
    second = augmentations.build(name, image_size=32, seed=7, **RGB)

    torch.manual_seed(1)  # the global generator must not matter
    calls_first = [first(batch) for _ in range(2)]
    torch.manual_seed(2)
    calls_second = [second(batch) for _ in range(2)]

    for views_first, views_second in zip(calls_first, calls_second):
        for a, b in zip(views_first, views_second):
            assert torch.equal(a, b)
    assert not torch.equal(calls_first[0][0], calls_first[1][0]), "each call must draw new views"


@pytest.mark.parametrize("name", RANDOM_PIPELINES)
def test_different_seeds_give_different_views(name):
    batch = uint8_images(4, 3, 32, 32)
    a = augmentations.build(name, image_size=32, seed=0, **RGB)(batch)
    b = augmentations.build(name, image_size=32, seed=1, **RGB)(batch)
    assert not torch.equal(a[0], b[0])


def test_seeded_pipeline_leaves_the_global_generator_alone():
    pipeline = augmentations.build("simclr", image_size=32, seed=0, **RGB)
    state = torch.get_rng_state()
    pipeline(uint8_images(4, 3, 32, 32))
    assert torch.equal(torch.get_rng_state(), state)


def test_unseeded_pipeline_follows_the_global_seed():
    pipeline = augmentations.build("simclr", image_size=32, **RGB)
    batch = uint8_images(4, 3, 32, 32)
    torch.manual_seed(5)
    a = pipeline(batch)
    torch.manual_seed(5)
    b = pipeline(batch)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_eval_is_deterministic_and_its_views_identical():
    pipeline = augmentations.build("eval", image_size=24, num_views=3, **RGB)
    batch = uint8_images(4, 3, 40, 30)
    first, second = pipeline(batch), pipeline(batch)
    assert all(torch.equal(view, first[0]) for view in first + second)


def test_weak_view_is_the_image_or_its_mirror():
    batch = uint8_images(64, 3, 32, 32)
    pipeline = augmentations.build("simclr", image_size=32, weak_view=True, seed=0, **RGB)

    weak = unnormalise(pipeline(batch)[-1], RGB)

    image = batch.float() / 255
    same = (weak - image).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (weak - image.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 64


def test_byol_views_alternate_between_its_two_configurations():
    pipeline = augmentations.build("byol", image_size=96, num_views=4, **RGB)

    def probabilities(view: torch.nn.Module, kind: type) -> list[float]:
        return [module.p for module in view.modules() if isinstance(module, kind)]

    for index, view in enumerate(pipeline.views):
        first = index % 2 == 0
        assert probabilities(view, K.RandomGaussianBlur) == ([1.0] if first else [0.1])
        assert probabilities(view, K.RandomSolarize) == ([] if first else [0.2])


def test_grayscale_pipelines_have_no_colour_ops():
    for name in augmentations.available():
        pipeline = augmentations.build(name, image_size=32, **GRAY)
        assert not any(isinstance(m, K.RandomGrayscale) for m in pipeline.modules())
        for jitter in (m for m in pipeline.modules() if isinstance(m, ColourJitter)):
            assert jitter.steps == (0, 1) and jitter.ranges[2:] == ((1.0, 1.0), (0.0, 0.0))


@pytest.mark.parametrize("image_size", [32, 96])
def test_grayscale_supcon_runs_every_autoaugment_sub_policy(image_size):
    pipeline = augmentations.build("supcon", image_size=image_size, **GRAY)
    auto_augments = [m for m in pipeline.views[0].modules() if isinstance(m, AutoAugment)]
    batch = torch.rand(4, 1, image_size, image_size)
    assert len(auto_augments) == 25
    for auto_augment in auto_augments:
        (sub_policy,) = auto_augment.children()
        assert sub_policy(batch).shape == batch.shape


def test_views_are_float32_under_autocast():
    batch = uint8_images(4, 3, 32, 32)
    plain = augmentations.build("byol", image_size=32, seed=0, **RGB)(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = augmentations.build("byol", image_size=32, seed=0, **RGB)(batch)
    for a, b in zip(plain, autocast):
        assert b.dtype == torch.float32
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", augmentations.available())
def test_moving_or_casting_the_pipeline_changes_no_view(name):
    batch = uint8_images(4, 3, 32, 32)
    plain = augmentations.build(name, image_size=32, seed=0, **RGB)(batch)
    cast = augmentations.build(name, image_size=32, seed=0, **RGB).to(torch.bfloat16).to(torch.float64)
    assert all(tensor.dtype == torch.float64 for tensor in [*cast.parameters(), *cast.buffers()])
    assert all(b.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(plain, cast(batch)))


def test_pipeline_has_nothing_to_train():
    pipeline = augmentations.build("supcon", image_size=32, **RGB)
    assert not any(parameter.requires_grad for parameter in pipeline.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_gives_cuda_views_equal_to_the_cpu_ones():
    batch = uint8_images(8, 3, 32, 32)
    on_cpu = augmentations.build("simclr", image_size=32, seed=0, **RGB)(batch)
    on_gpu = augmentations.build("simclr", image_size=32, seed=0, **RGB)(batch.cuda())
    for a, b in zip(on_cpu, on_gpu):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": "simclrr"}, "unknown augmentation pipeline 'simclrr'; available: simclr, mocov2"),
        ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
        ({"image_size": 32.0}, "image_size must be an integer >= 1, got 32.0"),
        ({"num_views": 0}, "num_views must be an integer >= 1, got 0"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2)}, "mean must have 1 (grayscale) or 3 (RGB) finite values, got 2"),
        ({"mean": "abc"}, "mean must be a sequence of 1 or 3 numbers"),
        ({"std": (0.2, 0.0, 0.2)}, "std values must be > 0, got (0.2, 0.0, 0.2)"),
        ({"std": (0.2,)}, "std must have as many values as mean (3), got 1"),
        ({"weak_view": "yes"}, "weak_view must be True or False, got 'yes'"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"min_scal": 0.1}, "unknown option(s) min_scal for pipeline 'simclr'; allowed: min_scale, jitter_strength"),
        ({"min_scale": 0}, "min_scale must be a number in (0, 1], got 0"),
        ({"name": "supcon", "policy": "mnist"}, "policy must be one of cifar10, imagenet, svhn; got 'mnist'"),
        ({"name": "eval", "min_scale": 0.5}, "unknown option(s) min_scale for pipeline 'eval'; allowed: none"),
    ],
)
def test_bad_build_arguments_are_named(arguments, message):
    kwargs = {"name": "simclr", "image_size": 32, **RGB, **arguments}
    name = kwargs.pop("name")
    with pytest.raises(ValueError) as error:
        augmentations.build(name, **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (torch.zeros(3, 32, 32, dtype=torch.uint8), "expected images of shape (B, C, H, W), got shape (3, 32, 32)"),
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "expected 3-channel images (the length of mean/std), got 1"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "got dtype torch.int64"),
        (torch.zeros(0, 3, 32, 32), "expected a non-empty batch of non-empty images, got shape (0, 3, 32, 32)"),
    ],
)
def test_bad_batches_are_named(batch, message):
    pipeline = augmentations.build("simclr", image_size=32, **RGB)
    with pytest.raises(ValueError) as error:
        pipeline(batch)
    assert message in str(error.value)


def test_a_batch_must_be_a_tensor():
    with pytest.raises(TypeError, match="expected a tensor of images"):
        augmentations.build("simclr", image_size=32, **RGB)([[0]])


def test_module_apply_visits_every_op():
    """``nn.Module.apply(fn)`` recurses into every submodule, the colour jitter included (whose
    own draw-and-apply step is ``apply_draw``, not ``apply``)."""
    pipeline = augmentations.build("simclr", image_size=32, **RGB)
    visited = []
    assert pipeline.apply(visited.append) is pipeline
    assert visited[-1] is pipeline and {id(m) for m in visited} == {id(m) for m in pipeline.modules()}
    assert any(isinstance(m, ColourJitter) for m in visited)
