"""MoCo v3, NNCLR, DCL and DCLW: each loss against its equation written out here in float64, the
NNCLR support set (nearest neighbour, update rule, checkpoint), and MoCo v3's and NNCLR's
gathering across 2 CPU processes.

The shared per-method tests (loss falling on held-out data, momentum targets and schedule,
resume, wrong settings) cover these methods through the registry in ``tests/test_methods.py``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn

from tcl_ssl.data import Split, batch_loader, load_builtin
from tcl_ssl.methods import Method, OptimConfig, method_class

BATCH = 16
#: small heads and support set, so that every test runs in well under a second
SMALL = {"hidden_dim": 32, "prediction_hidden_dim": 32, "output_dim": 16, "queue_size": 48}

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoFixedViews(nn.Module):
    """A deterministic 'augmentation': the image and its mirror image, normalised."""

    def forward(self, images: Tensor) -> list[Tensor]:
        x = images.float().div(255).sub(0.13).div(0.3)
        return [x, x.flip(-1)]


def build(name: str, seed: int = 0, **options: Any) -> Method:
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    cls = method_class(name)
    small = {key: value for key, value in SMALL.items() if key in cls.options()}
    optim = OptimConfig(lr=0.1, weight_decay=1e-4, warmup_epochs=0, batch_size=BATCH)
    return cls(backbone, 24, TwoFixedViews(), num_classes=10, optim=optim, **(small | options))


@pytest.fixture(scope="module")
def digits() -> Split:
    """4 batches of shuffled built-in digits."""
    data = load_builtin()
    keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: 4 * BATCH]
    return Split(data.train.images[keep], data.train.labels[keep])


def views_of(digits: Split, batch: int) -> list[Tensor]:
    return TwoFixedViews()(digits.images[batch * BATCH : (batch + 1) * BATCH])


def unit64(x: Tensor) -> Tensor:
    x = x.detach().double()
    return x / x.norm(dim=1, keepdim=True)


def nt_xent64(a: Tensor, b: Tensor, t: float) -> Tensor:
    """NT-Xent over the 2N samples ``[a; b]`` in float64: each sample's positive is its pair in the
    other half, its negatives the other 2N - 2 samples."""
    u = unit64(torch.cat([a, b]))
    n = a.shape[0]
    logits = u @ u.T / t
    total = torch.zeros((), dtype=torch.float64)
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = torch.cat([logits[i, :i], logits[i, i + 1 :]])
        total = total + torch.logsumexp(others, 0) - logits[i, positive]
    return total / (2 * n)


# --- MoCo v3 ---------------------------------------------------------------------------------


def ctr64(q: Tensor, k: Tensor, t: float) -> Tensor:
    """The MoCo v3 paper's ``ctr(q, k)`` (algorithm 1) in float64: ``CE(q k^T / t, diagonal) * 2t``."""
    logits = unit64(q) @ unit64(k).T / t
    rows = range(q.shape[0])
    return 2 * t * sum(torch.logsumexp(logits[i], 0) - logits[i, i] for i in rows) / q.shape[0]


def test_mocov3_loss_is_the_papers_symmetric_ctr_of_predictions_against_momentum_keys(digits):
    method = build("mocov3", temperature=0.3)
    views = views_of(digits, 0)
    loss = method.training_loss(views, None)
    with torch.no_grad():  # the same batched forward passes, read off module by module
        z = torch.cat(method.project_views(views, method.projection_head))
        q0, q1 = method.prediction_head(z).chunk(2)
        k0, k1 = method.project_views(views, method.projection_head_momentum, method.backbone_momentum)
    expected = ctr64(q0, k1, 0.3) + ctr64(q1, k0, 0.3)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    # the queries are the predictor's outputs: the same loss on the projections is another value
    z0, z1 = z.chunk(2)
    assert abs(float(loss.detach()) - float(ctr64(z0, k1, 0.3) + ctr64(z1, k0, 0.3))) > 1e-3


def test_mocov3_keys_come_from_the_batch_only(digits):
    """No queue: a batch's loss does not depend on the batches before it."""
    method = build("mocov3")
    views = views_of(digits, 1)
    with torch.no_grad():
        alone = method.training_loss(views, None)
        method.training_loss(views_of(digits, 0), None)
        after_another = method.training_loss(views, None)
    torch.testing.assert_close(alone, after_another, rtol=0, atol=0)
    assert not any("bank" in key or "queue" in key for key in method.state_dict())


# --- NNCLR -----------------------------------------------------------------------------------


def nearest64(z: Tensor, bank: Tensor) -> tuple[Tensor, Tensor]:
    """Brute force: for each row of ``z``, the index of the bank entry of largest cosine similarity
    (a loop over the entries), and that entry as stored."""
    zu, bu = unit64(z), unit64(bank)
    index = []
    for row in zu:
        best, best_j = -2.0, -1
        for j, entry in enumerate(bu):
            cosine = float(row @ entry)
            if cosine > best:
                best, best_j = cosine, j
        index.append(best_j)
    chosen = torch.tensor(index)
    return chosen, bank.detach().double()[chosen]


def test_nnclr_positive_is_the_nearest_neighbour_in_the_support_set_before_the_step(digits):
    method = build("nnclr", temperature=0.3)
    for batch in (0, 1):  # 32 of the 48 entries are now real projections
        method.training_loss(views_of(digits, batch), None).backward()
    bank = method.support_set.bank.clone()
    views = views_of(digits, 2)
    loss = method.training_loss(views, None)
    with torch.no_grad():
        z = torch.cat(method.project_views(views, method.projection_head))
        p0, p1 = method.prediction_head(z).chunk(2)
    z0, z1 = z.chunk(2)
    index0, nn0 = nearest64(z0, bank)
    index1, nn1 = nearest64(z1, bank)
    assert index0.unique().numel() > 1 and bool((index0 < 32).all())  # real projections, not one entry
    expected = (nt_xent64(nn0, p1, 0.3) + nt_xent64(nn1, p0, 0.3)) / 2
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_nnclr_support_set_takes_the_second_views_projections_and_wraps(digits):
    method = build("nnclr")  # 48 entries, 16 projections a step
    support = method.support_set
    pointers = []
    for batch in (0, 1, 2):
        views = views_of(digits, batch)
        method.training_loss(views, None).backward()
        pointers.append(int(support.bank_ptr))
    assert pointers == [16, 32, 0]  # 48 reached: the pointer goes back to 0
    with torch.no_grad():
        z0, z1 = method.project_views(views, method.projection_head)
    torch.testing.assert_close(support.bank[32:48], z1, rtol=0, atol=1e-6)  # as projected, not normalised
    stored = support.bank.clone()
    with torch.no_grad():  # an evaluation of the loss leaves the support set alone
        method.training_loss(views_of(digits, 3), None)
    assert int(support.bank_ptr) == 0 and torch.equal(support.bank, stored)


@pytest.mark.parametrize("name", ["nnclr", "dcl", "dclw"])
def test_a_checkpoint_restores_the_weights_and_support_set_exactly(digits, tmp_path, name):
    method = build(name)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, train_dataloaders=batch_loader(digits, BATCH, shuffle=False, drop_last=True))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    restored = build(name, seed=1)  # other weights; a support set of other random vectors
    restored.load_state_dict(checkpoint["state_dict"])
    trained = method.state_dict()
    assert restored.state_dict().keys() == trained.keys()
    for key, value in restored.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    if name == "nnclr":  # the 4 steps' second views are in it: 64 projections through 48 entries
        assert {"support_set.bank", "support_set.bank_ptr"} <= trained.keys()
        assert int(restored.support_set.bank_ptr) == 16
    views = views_of(digits, 0)
    with torch.no_grad():
        torch.testing.assert_close(restored.training_loss(views, None), method.training_loss(views, None))


# --- DCL, DCLW --------------------------------------------------------------------------------


def dcl64(z0: Tensor, z1: Tensor, t: float, weights: Tensor | None = None) -> Tensor:
    """Decoupled contrastive loss in float64: for each of the 2N views ``i`` with positive ``p``,
    ``-w s_ip / t + log sum_{n != i, p} exp(s_in / t)``, averaged; ``w`` the image's weight (1 for DCL)."""
    u = unit64(torch.cat([z0, z1]))
    n = z0.shape[0]
    s = u @ u.T
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights
    total = torch.zeros((), dtype=torch.float64)
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        negatives = [s[i, j] / t for j in range(2 * n) if j not in (i, p)]
        total = total - w[i % n] * s[i, p] / t + torch.logsumexp(torch.stack(negatives), 0)
    return total / (2 * n)


def test_dcl_loss_is_the_decoupled_equation(digits):
    method = build("dcl", temperature=0.2)
    views = views_of(digits, 0)
    loss = method.training_loss(views, None)
    z0, z1 = method.project_views(views, method.projection_head)
    torch.testing.assert_close(loss.double(), dcl64(z0, z1, 0.2), rtol=1e-5, atol=1e-6)
    # the positive is out of the denominator: DCL is below NT-Xent on the same projections
    assert float(loss.detach()) < float(nt_xent64(z0, z1, 0.2))


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # lightly 1.6's weight function
def test_dclw_weights_the_positive_by_the_negative_von_mises_fisher_weight(digits):
    method = build("dclw", temperature=0.2, sigma=0.3)
    views = views_of(digits, 0)
    loss = method.training_loss(views, None)
    z0, z1 = method.project_views(views, method.projection_head)
    cosines = (unit64(z0) * unit64(z1)).sum(1)
    weights = 2 - BATCH * torch.softmax(cosines / 0.3, 0)
    assert float(weights.mean()) == pytest.approx(1.0) and float(weights.std()) > 1e-3  # not all 1
    torch.testing.assert_close(loss.double(), dcl64(z0, z1, 0.2, weights), rtol=1e-5, atol=1e-6)
    # no gradient through the weight: the gradient is that of the loss with the weight held fixed
    a, b = (z.detach().double().requires_grad_(True) for z in (z0, z1))
    method.float32_loss(method.criterion, a, b).backward()
    a64, b64 = (z.detach().double().requires_grad_(True) for z in (z0, z1))
    dcl64_grad = torch.autograd.grad(_dcl64_differentiable(a64, b64, 0.2, weights), (a64, b64))
    torch.testing.assert_close(a.grad, dcl64_grad[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b.grad, dcl64_grad[1], rtol=1e-4, atol=1e-6)


def _dcl64_differentiable(z0: Tensor, z1: Tensor, t: float, weights: Tensor) -> Tensor:
    """:func:`dcl64` with gradients (vectorised): fixed ``weights``, masks for self and positive."""
    u = nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    s = u @ u.T / t
    index = torch.arange(2 * n)
    positive = (index + n) % (2 * n)
    excluded = torch.eye(2 * n, dtype=torch.bool) | (index[None, :] == positive[:, None])
    negatives = torch.logsumexp(s.masked_fill(excluded, float("-inf")), 1)
    return (-weights.repeat(2) * s[index, positive] + negatives).mean()


@pytest.mark.parametrize(
    "name,option,value,message",
    [
        ("mocov3", "temperature", 0.0, "temperature must be a finite number > 0, got 0.0"),
        ("mocov3", "momentum_end", 1.5, "momentum_end must be a number in [0, 1], got 1.5"),
        ("nnclr", "queue_size", 0, "queue_size must be an integer >= 1, got 0"),
        ("nnclr", "prediction_hidden_dim", 2.5, "prediction_hidden_dim must be an integer >= 1, got 2.5"),
        ("dcl", "temperature", -0.1, "temperature must be a finite number > 0, got -0.1"),
        ("dclw", "sigma", float("nan"), "sigma must be a finite number > 0, got nan"),
    ],
)
def test_bad_options_are_refused_by_name(name, option, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(name, **{option: value})


# --- two processes ---------------------------------------------------------------------------

WORLD = 2


def _inputs() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * BATCH, 8, generator=gen), torch.randn(WORLD * BATCH, 8, generator=gen)


def _worker(rank: int, port: int, results: Any) -> None:
    from baselines.mocov3 import mocov3_contrastive

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        queries, keys = _inputs()
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        loss = mocov3_contrastive(queries[rows], keys[rows], 0.3)
        method = method_class("nnclr")(nn.Identity(), 8, nn.Identity(), hidden_dim=4, output_dim=4, queue_size=64)
        method.support_set(keys[rows, :4], update=True)
        results[rank] = (loss, method.support_set.bank.clone(), int(method.support_set.bank_ptr))
    finally:
        torch_dist.destroy_process_group()


def test_mocov3_and_nnclr_on_two_processes_use_the_global_batch():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=WORLD, join=True)
    queries, keys = _inputs()
    for rank in range(WORLD):  # each process: its own queries against every process's keys
        loss, bank, pointer = results[rank]
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        logits = unit64(queries[rows]) @ unit64(keys).T / 0.3
        own = torch.arange(BATCH) + rank * BATCH
        expected = 2 * 0.3 * (torch.logsumexp(logits, 1) - logits[torch.arange(BATCH), own]).mean()
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
        # both processes added the global batch, in rank order: the support sets stay equal
        assert pointer == WORLD * BATCH
        torch.testing.assert_close(bank[: WORLD * BATCH], keys[:, :4], rtol=0, atol=0)
