"""TCLLoss with a labelled memory bank: semantics against the official formula, and resume."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NTXentLoss

from tcl_ssl import TCLLoss
from tcl_ssl.bench.loss import official_formula as official_tcl_loss
from tcl_ssl.memory_bank import LabeledMemoryBank

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


@pytest.mark.parametrize("size", [-1, True, 2.5, (5,), (5, 8, 1), (-5, 8), (5, 0)])
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


def test_int_bank_size_takes_the_width_from_the_first_batch():
    lazy, sized = TCLLoss(memory_bank_size=50), TCLLoss(memory_bank_size=(50, DIM))
    for seed in range(3):
        views, labels = _step(seed)
        torch.testing.assert_close(lazy(*views, labels=labels), sized(*views, labels=labels))
    assert lazy.memory_bank.dim == DIM
    torch.testing.assert_close(lazy.memory_bank.get()[0], sized.memory_bank.get()[0])


def test_int_bank_size_loads_a_saved_bank_before_its_first_batch():
    saved = TCLLoss(memory_bank_size=(50, DIM))
    for seed in range(2):
        views, labels = _step(seed)
        saved(*views, labels=labels)
    restored = TCLLoss(memory_bank_size=50)
    restored.load_state_dict(saved.state_dict())
    views, labels = _step(7)
    torch.testing.assert_close(restored(*views, labels=labels), saved(*views, labels=labels))


def _direct_tcl(anchors, anchor_groups, keys, key_groups, t, k1, k2):
    """The reference definition, anchor by anchor (anchors are not among the keys)."""
    anchors = torch.nn.functional.normalize(anchors, dim=1)
    keys = torch.nn.functional.normalize(keys, dim=1)
    losses = []
    for z, group in zip(anchors, anchor_groups):
        sim = keys @ z
        pos, neg = sim[key_groups == group], sim[key_groups != group]
        if pos.numel() == 0:
            continue
        denom = (pos / t).exp().sum() + k1 * (-pos).exp().sum() + k2 * (neg / t).exp().sum()
        losses.append(-((pos / t) - denom.log()).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("supervised", [False, True])
def test_first_view_anchors_contrast_with_the_keys_and_the_bank(supervised):
    loss_fn = TCLLoss(0.2, 30.0, 2.0, memory_bank_size=(100, DIM), anchors="first")
    (q0, k0), labels0 = _step(0)
    loss_fn(q0, k0, labels=labels0 if supervised else None)
    assert int(loss_fn.memory_bank.filled) == 6  # only the keys were enqueued
    (q1, k1), labels1 = _step(1)
    loss = loss_fn(q1, k1, labels=labels1 if supervised else None)

    keys = torch.cat([k1, k0])
    if supervised:
        anchor_groups, key_groups = labels1, torch.cat([labels1, labels0])
    else:  # each query's positive is its own key; bank entries are negatives
        anchor_groups, key_groups = torch.arange(6), torch.cat([torch.arange(6), 100 + torch.arange(6)])
    expected = _direct_tcl(q1, anchor_groups, keys, key_groups, 0.2, 30.0, 2.0)
    torch.testing.assert_close(loss, expected)


def test_first_view_anchors_with_one_image_are_lightlys_ntxent_with_a_memory_bank():
    gen = torch.Generator().manual_seed(3)
    bank = torch.nn.functional.normalize(torch.randn(16, DIM, generator=gen, dtype=torch.float64), dim=1)
    ours = TCLLoss(temperature=0.3, k1=0.0, k2=1.0, memory_bank_size=(16, DIM), anchors="first").double()
    ours.memory_bank.enqueue(bank)
    lightly = NTXentLoss(temperature=0.3, memory_bank_size=(16, DIM)).double()
    lightly.memory_bank.bank.copy_(bank)
    query, key = (torch.randn(1, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(ours(query, key), lightly(query, key))


@pytest.mark.parametrize("anchors", ["first", "all"])
def test_calls_without_bank_update_see_the_same_bank_and_enqueue_adds_their_keys(anchors):
    loss_fn = TCLLoss(0.2, 5.0, 1.0, memory_bank_size=(40, DIM), anchors=anchors)
    (q, k), labels = _step(0)
    loss_fn(q, k, labels=labels)
    before = [t.clone() for t in loss_fn.memory_bank.get()]
    (q0, q1), labels = _step(1)
    (k0, k1), _ = _step(2)
    fresh = TCLLoss(0.2, 5.0, 1.0, memory_bank_size=(40, DIM), anchors=anchors)
    fresh.load_state_dict(loss_fn.state_dict())
    loss_fn(q0, k1, labels=labels, update_bank=False)
    second = loss_fn(q1, k0, labels=labels, update_bank=False)
    for now, then in zip(loss_fn.memory_bank.get(), before):
        assert torch.equal(now, then)
    torch.testing.assert_close(second, fresh(q1, k0, labels=labels))  # it saw the bank the first call saw
    loss_fn.enqueue(k1, k0, labels=labels)
    embeddings, stored = loss_fn.memory_bank.get()
    assert stored.tolist() == before[1].tolist() + labels.tolist() * 2
    torch.testing.assert_close(embeddings[-12:], torch.nn.functional.normalize(torch.cat([k1, k0]), dim=1).float())
