"""TCLPMLLoss and its PML wrappers against tcl_loss / TCLLoss and PML's SupConLoss."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.losses import SupConLoss
from pytorch_metric_learning.reducers import AvgNonZeroReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from tcl_ssl import TCLLoss, tcl_loss
from tcl_ssl.bench.loss import official_formula as official_tcl_loss
from tcl_ssl.pml import CrossBatchMemory, SelfSupervisedLoss, TCLPMLLoss

HYPERPARAMETERS = [(0.1, 5000.0, 1.0), (0.2, 100.0, 3.0), (0.5, 1.0, 0.5), (1.0, 0.0, 2.0)]


def _data(n: int = 24, dim: int = 8, num_labels: int = 5, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen, dtype=dtype), torch.randint(0, num_labels, (n,), generator=gen)


def _value_and_grad(fn, *tensors: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def _assert_same(fn_a, fn_b, *tensors, rtol=1e-10, atol=1e-10):
    value_a, grads_a = _value_and_grad(fn_a, *tensors)
    value_b, grads_b = _value_and_grad(fn_b, *tensors)
    torch.testing.assert_close(value_a, value_b, rtol=rtol, atol=atol)
    for g_a, g_b in zip(grads_a, grads_b):
        torch.testing.assert_close(g_a, g_b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS)
def test_equals_tcl_loss_and_official_formula_with_labels(temperature, k1, k2):
    z, labels = _data()
    loss = TCLPMLLoss(temperature, k1, k2)
    _assert_same(lambda e: loss(e, labels), lambda e: tcl_loss(e, labels, temperature, k1, k2), z)
    torch.testing.assert_close(loss(z, labels), official_tcl_loss(z, labels, temperature, k1, k2))


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS[:2])
def test_ref_emb_equals_tcl_loss_with_keys(temperature, k1, k2):
    z, labels = _data(n=10, seed=1)
    ref, ref_labels = _data(n=14, seed=2)
    loss = TCLPMLLoss(temperature, k1, k2)
    _assert_same(
        lambda e, r: loss(e, labels, ref_emb=r, ref_labels=ref_labels),
        lambda e, r: tcl_loss(e, labels, temperature, k1, k2, keys=r, key_groups=ref_labels),
        z,
        ref,
    )


def test_indices_tuple_leaves_unlisted_keys_out_of_the_denominator():
    """A pair list without key ``j`` is TCL against all keys but ``j`` (``j`` still an anchor)."""
    z, labels = _data(n=16, seed=3)
    j = 5
    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    pairs = (a1[p != j], p[p != j], a2[n != j], n[n != j])
    keep = torch.arange(16) != j
    self_index = torch.cumsum(keep.long(), 0) - 1  # column of each anchor among kept keys
    self_index[j] = -1
    loss = TCLPMLLoss(0.2, 100.0, 2.0)
    _assert_same(
        lambda e: loss(e, labels, indices_tuple=pairs),
        lambda e: tcl_loss(e, labels, 0.2, 100.0, 2.0, keys=e[keep], key_groups=labels[keep], self_index=self_index),
        z,
    )


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance()], ids=["cosine", "lp"])
@pytest.mark.parametrize("with_ref", [False, True])
def test_k1_0_k2_1_equals_pml_supcon(distance, with_ref):
    z, labels = _data(seed=4)
    ref, ref_labels = _data(n=30, seed=5) if with_ref else (None, None)
    ours = TCLPMLLoss(0.07, k1=0.0, k2=1.0, distance=distance)
    theirs = SupConLoss(0.07, distance=distance)
    kwargs = {"ref_emb": ref, "ref_labels": ref_labels}
    _assert_same(lambda e: ours(e, labels, **kwargs), lambda e: theirs(e, labels, **kwargs), z)


@pytest.mark.parametrize("tuple_kind", ["pairs", "triplets"])
def test_k1_0_k2_1_equals_pml_supcon_with_mined_indices(tuple_kind):
    z, labels = _data(seed=6)
    gen = torch.Generator().manual_seed(7)
    if tuple_kind == "pairs":
        a1, p, a2, n = lmu.get_all_pairs_indices(labels)
        keep_p = torch.rand(a1.numel(), generator=gen) < 0.6
        keep_n = torch.rand(a2.numel(), generator=gen) < 0.3
        indices = (a1[keep_p], p[keep_p], a2[keep_n], n[keep_n])
    else:
        a, p, n = lmu.get_all_triplets_indices(labels)
        keep = torch.rand(a.numel(), generator=gen) < 0.05
        indices = (a[keep], p[keep], n[keep])
    ours = TCLPMLLoss(0.1, k1=0.0, k2=1.0)
    theirs = SupConLoss(0.1)
    _assert_same(
        lambda e: ours(e, labels, indices_tuple=indices),
        lambda e: theirs(e, labels, indices_tuple=indices),
        z,
    )


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS[:2])
def test_self_supervised_wrapper_equals_tcl_loss_module(temperature, k1, k2):
    view0, _ = _data(n=12, seed=8)
    view1, _ = _data(n=12, seed=9)
    wrapped = SelfSupervisedLoss(TCLPMLLoss(temperature, k1, k2))
    _assert_same(wrapped, TCLLoss(temperature, k1, k2), view0, view1)


def test_self_supervised_wrapper_not_symmetric_uses_ref_as_keys_only():
    view0, _ = _data(n=12, seed=10)
    view1, _ = _data(n=12, seed=11)
    ids = torch.arange(12)
    wrapped = SelfSupervisedLoss(TCLPMLLoss(0.1, 5000.0, 1.0), symmetric=False)
    _assert_same(
        wrapped,
        lambda a, b: tcl_loss(a, ids, 0.1, 5000.0, 1.0, keys=b, key_groups=ids),
        view0,
        view1,
    )


def test_self_supervised_wrapper_k1_0_equals_wrapped_supcon():
    view0, _ = _data(n=12, seed=12)
    view1, _ = _data(n=12, seed=13)
    ours = SelfSupervisedLoss(TCLPMLLoss(0.1, k1=0.0, k2=1.0))
    theirs = pml_losses.SelfSupervisedLoss(SupConLoss(0.1))
    _assert_same(ours, theirs, view0, view1)


@pytest.mark.parametrize("temperature,k1,k2", HYPERPARAMETERS[:2])
def test_cross_batch_memory_equals_tcl_loss_with_memory_as_keys(temperature, k1, k2):
    """Anchors: the batch; keys: the last ``memory_size`` enqueued embeddings (batch included)."""
    batch, memory_size = 8, 20  # the third batch wraps around the ring buffer
    wrapped = CrossBatchMemory(TCLPMLLoss(temperature, k1, k2), embedding_size=6, memory_size=memory_size)
    seen, seen_labels = [], []
    for step in range(4):
        z, labels = _data(n=batch, dim=6, num_labels=4, seed=20 + step)
        seen.append(z)
        seen_labels.append(labels)
        keys = torch.cat(seen)[-memory_size:]
        key_groups = torch.cat(seen_labels)[-memory_size:]
        self_index = torch.arange(keys.shape[0] - batch, keys.shape[0])
        expected = _value_and_grad(
            lambda e: tcl_loss(e, labels, temperature, k1, k2, keys=keys, key_groups=key_groups, self_index=self_index),
            z,
        )
        actual = _value_and_grad(lambda e: wrapped(e, labels), z)
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_cross_batch_memory_with_enqueue_mask_has_no_self_exclusion():
    """MoCo-style: masked rows only fill the queue; the other rows are anchors."""
    wrapped = CrossBatchMemory(TCLPMLLoss(0.2, 100.0, 1.0), embedding_size=6, memory_size=12)
    seen, seen_labels = [], []
    for step in range(3):
        z, labels = _data(n=10, dim=6, num_labels=3, seed=30 + step)
        mask = torch.arange(10) >= 5
        seen.append(z[mask])
        seen_labels.append(labels[mask])
        keys, key_groups = torch.cat(seen)[-12:], torch.cat(seen_labels)[-12:]
        expected = _value_and_grad(
            lambda e: tcl_loss(e[~mask], labels[~mask], 0.2, 100.0, 1.0, keys=keys, key_groups=key_groups),
            z,
        )
        actual = _value_and_grad(lambda e: wrapped(e, labels, enqueue_mask=mask), z)
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_cross_batch_memory_k1_0_equals_wrapped_supcon():
    ours = CrossBatchMemory(TCLPMLLoss(0.1, k1=0.0, k2=1.0), embedding_size=6, memory_size=20)
    theirs = pml_losses.CrossBatchMemory(SupConLoss(0.1), embedding_size=6, memory_size=20)
    for step in range(4):
        z, labels = _data(n=8, dim=6, num_labels=4, seed=40 + step)
        _assert_same(lambda e: ours(e, labels), lambda e: theirs(e, labels), z)


def test_wrappers_are_pml_subclasses_and_pml_is_left_unchanged():
    assert issubclass(SelfSupervisedLoss, pml_losses.SelfSupervisedLoss)
    assert issubclass(CrossBatchMemory, pml_losses.CrossBatchMemory)
    assert "TCLPMLLoss" not in pml_losses.SelfSupervisedLoss.supported_losses()
    assert "TCLPMLLoss" not in pml_losses.CrossBatchMemory.supported_losses()
    with pytest.raises(Exception, match="not supported for TCLPMLLoss"):
        pml_losses.CrossBatchMemory(TCLPMLLoss(), embedding_size=4)
    with pytest.raises(Exception, match="not supported for FastAPLoss"):
        SelfSupervisedLoss(pml_losses.FastAPLoss())
    SelfSupervisedLoss(SupConLoss())  # PML's own losses are still accepted


def test_default_reducer_is_mean_over_anchors_with_positives():
    z, _ = _data(n=10, seed=50)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 5, 6])  # anchors 5..9 have no positive
    ours = TCLPMLLoss(0.1, 5000.0, 1.0)
    torch.testing.assert_close(ours(z, labels), tcl_loss(z, labels, 0.1, 5000.0, 1.0))
    with_avg_non_zero = TCLPMLLoss(0.1, 5000.0, 1.0, reducer=AvgNonZeroReducer())
    torch.testing.assert_close(with_avg_non_zero(z, labels), ours(z, labels))


def test_no_positive_or_no_negative_pair_gives_attached_zero_as_pml_supcon():
    z, _ = _data(n=8, seed=51)
    one_group = torch.zeros(8, dtype=torch.long)  # positives only: PML's SupConLoss gives 0
    for labels in (torch.arange(8), one_group):
        assert SupConLoss()(z, labels).item() == 0.0  # the oracle's convention
        for ours in (TCLPMLLoss(), TCLPMLLoss(block_size=3)):
            value, (grad,) = _value_and_grad(lambda e: ours(e, labels), z)
            assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    for ours in (TCLPMLLoss(), TCLPMLLoss(block_size=3)):  # keys of one group too: no negative pair
        assert SupConLoss()(z, one_group, ref_emb=z.flip(0), ref_labels=one_group).item() == 0.0
        assert ours(z, one_group, ref_emb=z.flip(0), ref_labels=one_group).item() == 0.0
    one_negative_pair = one_group.clone()
    one_negative_pair[-1] = 1  # one anchor of another label: every anchor of group 0 has a negative
    _assert_same(lambda e: TCLPMLLoss()(e, one_negative_pair), lambda e: tcl_loss(e, one_negative_pair), z)
    _assert_same(lambda e: TCLPMLLoss(block_size=3)(e, one_negative_pair), lambda e: tcl_loss(e, one_negative_pair), z)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_size", [None, 8])
def test_low_precision_input_gives_the_loss_in_its_dtype_as_pml_supcon(dtype, block_size):
    z, labels = _data(n=32, dim=16, seed=52, dtype=torch.float32)
    low = z.to(dtype)
    ours = TCLPMLLoss(temperature=0.05, block_size=block_size)(low, labels)
    assert ours.dtype == dtype and torch.isfinite(ours)
    # computed in float32 and rounded once: the float32 loss of the rounded inputs, in dtype
    assert ours == TCLPMLLoss(temperature=0.05)(low.float(), labels).to(dtype)
    supcon = SupConLoss(temperature=0.05)(low, labels)  # PML computes in dtype throughout
    assert supcon.dtype == dtype
    torch.testing.assert_close(
        TCLPMLLoss(temperature=0.05, k1=0.0, block_size=block_size)(low, labels).float(),
        supcon.float(),
        rtol=2e-2,
        atol=0.0,
    )


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"k1": -1.0}, {"k2": 0.0}])
def test_bad_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TCLPMLLoss(**kwargs)
