"""TCLLoss with a labelled memory bank: semantics against the official formula, and resume."""

from __future__ import annotations

import pytest
import torch

from tcl_ssl import TCLLoss
from tcl_ssl.memory_bank import LabeledMemoryBank
from tcl_ssl.bench.loss import official_formula as official_tcl_loss

DIM = 8


def _step(seed: int, batch: int = 6):
    gen = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch, DIM, generator=gen, dtype=torch.float64) for _ in range(2)]
    labels = torch.randint(0, 3, (batch,), generator=gen)
    return views, labels


@pytest.mark.parametrize("supervised", [False, True])
def test_bank_entries_are_keys_with_the_right_role(supervised):
    loss_fn = TCLLoss(0.2, 30.0, 2.0, memory_bank_size=(100, DIM))
    first, first_labels = _step(0)
    loss_fn(*first, labels=first_labels if supervised else None)  # fills the bank
    views, labels = _step(1)
    loss = loss_fn(*views, labels=labels if supervised else None)

    batch = torch.cat(views)
    bank = torch.nn.functional.normalize(torch.cat(first), dim=1)
    if supervised:  # bank entries of the anchor's label are positives
        groups = torch.cat([labels.repeat(2), first_labels.repeat(2)])
    else:  # all bank entries are negatives: give each its own group
        groups = torch.cat([torch.arange(6).repeat(2), 100 + torch.arange(12)])
    is_anchor = torch.arange(24) < 12
    expected = official_tcl_loss(torch.cat([batch, bank]), groups, 0.2, 30.0, 2.0, is_anchor=is_anchor)
    torch.testing.assert_close(loss, expected)


def test_bank_gets_no_gradient_and_is_fifo():
    bank = LabeledMemoryBank(size=5, dim=2)
    bank.enqueue(torch.arange(8.0).reshape(4, 2), torch.tensor([0, 1, 2, 3]))
    bank.enqueue(torch.arange(8.0, 14.0).reshape(3, 2).requires_grad_(True), torch.tensor([4, 5, 6]))
    embeddings, labels = bank.get()
    assert embeddings.shape == (5, 2) and not embeddings.requires_grad
    # entries 0 and 1 were overwritten by the newest two, entry 2 onwards kept in place
    assert labels.tolist() == [5, 6, 2, 3, 4]
    assert embeddings[0].tolist() == [10.0, 11.0]


def test_bank_is_resumed_from_state_dict():
    loss_fn = TCLLoss(memory_bank_size=(50, DIM))
    for seed in range(3):
        views, labels = _step(seed)
        loss_fn(*views, labels=labels)
    restored = TCLLoss(memory_bank_size=(50, DIM))
    restored.load_state_dict(loss_fn.state_dict())
    views, labels = _step(10)
    torch.testing.assert_close(restored(*views, labels=labels), loss_fn(*views, labels=labels))
    assert int(restored.memory_bank.filled) == int(loss_fn.memory_bank.filled) == 48


def test_bank_is_not_updated_in_eval_mode():
    loss_fn = TCLLoss(memory_bank_size=(50, DIM)).eval()
    views, _ = _step(0)
    loss_fn(*views)
    assert int(loss_fn.memory_bank.filled) == 0


@pytest.mark.parametrize("size", [5, (5,), (5, 8, 1)])
def test_bad_bank_size_raises(size):
    with pytest.raises(ValueError, match="memory_bank_size"):
        TCLLoss(memory_bank_size=size)


def test_negative_labels_with_bank_raise():
    views, _ = _step(0)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        TCLLoss(memory_bank_size=(10, DIM))(*views, labels=-torch.ones(6, dtype=torch.long))


def test_bank_of_another_width_raises():
    views, _ = _step(0)
    with pytest.raises(ValueError, match="memory bank was built for 4"):
        TCLLoss(memory_bank_size=(10, 4))(*views)
