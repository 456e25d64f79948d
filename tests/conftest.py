"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


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
    from tcl_ssl.data import assemble, load_builtin

    data = load_builtin()
    return assemble(
        data.name,
        data.train.subset(torch.arange(0, 3600, 9)),
        data.val.subset(torch.arange(0, 400, 4)),
        data.test.subset(torch.arange(0, 1000, 5)),
    )
