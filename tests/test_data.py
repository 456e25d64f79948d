"""Dataset sources: built-in digits, image folders, torchvision datasets, batched loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.datasets.utils import verify_str_arg
from torchvision.io import write_png

from tcl_ssl.data import (
    Split,
    batch_loader,
    channel_stats,
    load_builtin,
    load_dataset,
    load_image_folder,
    split_from_pil_dataset,
)


def test_builtin_digits_are_a_fixed_stratified_split():
    data = load_builtin()
    assert data.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert data.train.images.shape == (3600, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert torch.bincount(data.test.labels).tolist() == [100] * 10  # stratified
    assert torch.bincount(data.val.labels).tolist() == [40] * 10
    everything = torch.cat([data.train.images, data.val.images, data.test.images]).flatten(1)
    assert torch.unique(everything, dim=0).shape[0] == 5000  # the three splits are disjoint
    again = load_builtin()
    assert torch.equal(again.test.labels, data.test.labels) and torch.equal(again.test.images, data.test.images)
    assert data.num_classes == 10
    # MNIST's well-known statistics
    assert data.mean[0] == pytest.approx(0.13, abs=0.01) and data.std[0] == pytest.approx(0.31, abs=0.01)


def test_channel_stats_match_numpy():
    images = torch.randint(0, 256, (10, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=3)
    x = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)))


def _write_folder(root, classes=("cat", "dog", "emu"), per_class=10, size=(20, 24)):
    gen = torch.Generator().manual_seed(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            write_png(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen), str(root / cls / f"{i}.png"))


def test_image_folder_is_decoded_resized_split_and_cached(tmp_path):
    _write_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    data = load_image_folder(tmp_path / "images", image_size=16, val_fraction=0.25, cache_dir=cache)
    assert data.sizes() == {"train": 18, "val": 6, "test": 6}  # test 0.2 of 30, validation 0.25 of the rest
    assert data.train.images.shape == (18, 3, 16, 16)
    assert torch.bincount(data.test.labels).tolist() == [2, 2, 2]
    assert torch.bincount(data.val.labels).tolist() == [2, 2, 2]
    assert data.num_classes == 3
    assert len(list(cache.glob("folder-*.pt"))) == 1
    again = load_image_folder(tmp_path / "images", image_size=16, val_fraction=0.25, cache_dir=cache)
    assert torch.equal(again.train.images, data.train.images)


def test_bad_dataset_specs_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet-21k")
    with pytest.raises(ValueError, match="no images found"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        (tmp_path / "empty" / "b").mkdir(parents=True)
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="fraction"):
        _write_folder(tmp_path / "ok")
        load_image_folder(tmp_path / "ok", val_fraction=1.5, cache_dir=tmp_path)


def test_torchvision_style_pil_dataset_is_decoded():
    fake = torchvision.datasets.FakeData(size=12, image_size=(3, 10, 10), num_classes=4, random_offset=0)
    split = split_from_pil_dataset(fake)
    assert split.images.shape == (12, 3, 10, 10) and split.images.dtype == torch.uint8
    assert split.labels.max() < 4


def test_batch_loader_yields_whole_uint8_batches():
    split = Split(torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1), torch.arange(10))
    batches = list(batch_loader(split, batch_size=4, shuffle=True, drop_last=True, seed=0))
    assert len(batches) == 2
    images, labels = batches[0]
    assert images.shape == (4, 1, 1, 1) and images.dtype == torch.uint8
    assert torch.equal(images.flatten().long(), labels)  # images and labels stay paired


def test_image_folder_in_the_imagenet_layout_uses_its_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    _write_folder(root / "train", per_class=10)
    _write_folder(root / "val", classes=("cat", "emu"), per_class=3)  # a class may be missing
    data = load_dataset(str(root), image_size=8, val_fraction=0.2)  # val/ alone is the test split
    assert data.sizes() == {"train": 24, "val": 6, "test": 6}
    assert torch.bincount(data.test.labels, minlength=3).tolist() == [3, 0, 3]  # labels by the train classes
    _write_folder(root / "test", classes=("dog",), per_class=2)
    both = load_dataset(str(root), image_size=8)
    assert both.sizes() == {"train": 30, "val": 6, "test": 2}
    assert both.test.labels.tolist() == [1, 1]
    with pytest.raises(ValueError, match="val_fraction was given, but .* has its own val/ and test/"):
        load_dataset(str(root), val_fraction=0.2)
    with pytest.raises(ValueError, match="test_fraction was given"):
        load_dataset(str(root), test_fraction=0.2)
    _write_folder(root / "extra", classes=("yak",), per_class=1)
    (root / "extra" / "yak").rename(root / "test" / "yak")
    with pytest.raises(ValueError, match=r"class folders \['yak'\] .* are not among the training classes"):
        load_dataset(str(root))


def test_image_size_and_fractions_act_on_every_source_or_are_refused():
    data = load_dataset("mnist5k", image_size=32, val_fraction=0.25)
    assert data.train.images.shape[1:] == (1, 32, 32) and data.test.images.shape[1:] == (1, 32, 32)
    assert data.sizes() == {"train": 3000, "val": 1000, "test": 1000}
    with pytest.raises(ValueError, match="test_fraction applies only to a single image folder"):
        load_dataset("mnist5k", test_fraction=0.3)
    with pytest.raises(ValueError, match="image size must be an integer >= 1"):
        load_dataset("mnist5k", image_size=0)


def test_resizing_and_channel_conversion_keep_the_content():
    flat = Split(torch.full((3, 3, 20, 30), 77, dtype=torch.uint8), torch.arange(3))
    resized = flat.resized(8)
    assert resized.images.shape == (3, 3, 8, 8) and bool((resized.images == 77).all())
    gray = Split(torch.tensor([[[[0, 128]], [[255, 128]], [[0, 128]]]], dtype=torch.uint8), torch.tensor([0]))
    luma = gray.with_channels(1).images.flatten().tolist()
    assert luma == [round(0.587 * 255), 128]  # ITU-R 601 weights
    assert torch.equal(gray.with_channels(1).with_channels(3).images[:, 0], gray.with_channels(1).images[:, 0])


class _FakeVaried(torch.utils.data.Dataset):
    """A torchvision-style dataset with ``split=`` and PIL images of different sizes and modes."""

    splits = ("train", "val")

    def __init__(self, root, split="train", download=False):
        verify_str_arg(split, "split", self.splits)
        self.size = {"train": 40, "val": 10, "test": 12}[split]

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        mode = "L" if i % 3 == 0 else "RGB"
        return Image.new(mode, (20 + i % 5, 14 + i % 3), color=40 + i), i % 2


class _FakeThreeSplits(_FakeVaried):
    splits = ("train", "val", "test")


def test_torchvision_datasets_map_their_split_names_and_resize_like_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "FakeVaried", _FakeVaried, raising=False)
    monkeypatch.setattr(torchvision.datasets, "FakeThreeSplits", _FakeThreeSplits, raising=False)
    # train and val only (the ImageNet layout): val is the test split, validation comes off train
    data = load_dataset("torchvision:FakeVaried", data_dir=tmp_path, image_size=16, val_fraction=0.25)
    assert data.sizes() == {"train": 30, "val": 10, "test": 10}
    assert data.train.images.shape[1:] == (3, 16, 16) and data.channels == 3  # gray ones converted
    # train, val and test: all three used as given, and a fraction for val is refused
    data = load_dataset("torchvision:FakeThreeSplits", data_dir=tmp_path)
    assert data.sizes() == {"train": 40, "val": 10, "test": 12}
    assert data.image_size == 32  # sizes differ and none was given: the image folders' default
    with pytest.raises(ValueError, match="val_fraction was given, but FakeThreeSplits has its own val and test"):
        load_dataset("torchvision:FakeThreeSplits", data_dir=tmp_path, val_fraction=0.2)


def test_train_images_is_a_stratified_subset_of_train_only(small_digits):
    subset = small_digits.with_train_images(100)
    assert len(subset.train) == 100 and subset.val is small_digits.val and subset.test is small_digits.test
    assert (subset.mean, subset.std) == (small_digits.mean, small_digits.std)
    # each class keeps its share of the train split (to within one image), and the images are train images
    full = np.bincount(small_digits.train.labels.numpy(), minlength=10)
    part = np.bincount(subset.train.labels.numpy(), minlength=10)
    assert np.all(np.abs(part - full * 100 / full.sum()) <= 1)
    rows = {bytes(image.numpy()) for image in small_digits.train.images}
    assert all(bytes(image.numpy()) in rows for image in subset.train.images)
    assert small_digits.with_train_images(None) is small_digits
    assert small_digits.with_train_images(400) is small_digits  # all of it
    for bad in (9, 401):
        with pytest.raises(
            ValueError,
            match=f"train_images must be between 10 .one per class. and the train split.s 400 images, got {bad}",
        ):
            small_digits.with_train_images(bad)
