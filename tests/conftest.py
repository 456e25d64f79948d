"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import write_png

from tcl_ssl.data import assemble, load_builtin


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread: small tensors gain nothing from two, and two threads
    stall each other when the machine has other load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_digits():
    """400 train / 100 val / 200 test built-in digits: enough for a real kNN, fast on 2 cores."""
    data = load_builtin()
    return assemble(
        data.name,
        data.train.subset(torch.arange(0, 3600, 9)),
        data.val.subset(torch.arange(0, 400, 4)),
        data.test.subset(torch.arange(0, 1000, 5)),
    )


@pytest.fixture
def image_folder(tmp_path):
    """``tmp_path/images/c<k>/<i>.png``: 2 classes x 20 random 16 px RGB images."""
    return write_image_folder(tmp_path / "images")


def write_image_folder(root, classes: int = 2, per_class: int = 20, size: int = 16, seed: int = 0):
    """``root/c<k>/<i>.png``: random RGB images, ``classes`` x ``per_class``; returns ``root``."""
    gen = torch.Generator().manual_seed(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            write_png(
                torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen),
                str(root / f"c{c}" / f"{i}.png"),
            )
    return root
