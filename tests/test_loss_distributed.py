"""TCLLoss(gather_distributed=True) on 2 CPU processes (gloo) equals one process on the whole batch,
and, with a "lightly" bank, lightly's NTXentLoss with a gathered bank on the same processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from lightly.loss import NTXentLoss

from tcl_ssl import TCLLoss

WORLD = 2
BATCH = 8  # per process
DIM = 16


def _inputs(supervised: bool):
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(WORLD * BATCH, DIM, generator=gen, dtype=torch.float64) for _ in range(2)]
    labels = torch.randint(0, 4, (WORLD * BATCH,), generator=gen) if supervised else None
    return views, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, port: int, supervised: bool, bank: bool, anchors: str, deferred: bool, tiled: bool, results
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        views, labels = _inputs(supervised)
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        local = [v[rows].clone().requires_grad_(True) for v in views]
        local_labels = None if labels is None else labels[rows]
        loss_fn = TCLLoss(
            temperature=0.2,
            k1=50.0,
            k2=1.5,
            gather_distributed=True,
            memory_bank_size=(64, DIM) if bank else 0,
            anchors=anchors,
            # tiled: 3 anchors x 5 keys per tile (streaming log-sum-exp); the reference is dense
            block_size=3 if tiled else None,
            key_block_size=5 if tiled else None,
        )
        losses = []
        for _ in range(2 if bank else 1):  # with a bank, the second step sees the first's keys
            for v in local:
                v.grad = None
            loss = _step(loss_fn, local, local_labels, anchors, deferred)
            loss.backward()
            losses.append(loss.detach())
        results[rank] = (torch.stack(losses), [v.grad.clone() for v in local])
    finally:
        torch_dist.destroy_process_group()


def _step(loss_fn, views, labels, anchors, deferred):
    """One loss call; ``deferred``: with ``update_bank=False``, then ``enqueue`` of what it would add."""
    loss = loss_fn(*views, labels=labels, update_bank=not deferred)
    if deferred:
        loss_fn.enqueue(*(views[1:] if anchors == "first" else views), labels=labels)
    return loss


@pytest.mark.parametrize(
    "supervised,bank,anchors,deferred,tiled",
    [
        (False, False, "all", False, False),
        (True, False, "all", False, False),
        (True, True, "all", False, False),
        (False, True, "all", False, False),
        (False, True, "first", False, False),
        (True, True, "first", False, False),
        (True, True, "all", True, False),
        (False, True, "first", True, False),
        (False, False, "all", False, True),
        (True, True, "all", False, True),
    ],
)
def test_two_processes_match_one_process_on_the_concatenated_batch(supervised, bank, anchors, deferred, tiled):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), supervised, bank, anchors, deferred, tiled, results), nprocs=WORLD, join=True)

    views, labels = _inputs(supervised)
    views = [v.clone().requires_grad_(True) for v in views]
    reference = TCLLoss(temperature=0.2, k1=50.0, k2=1.5, memory_bank_size=(64, DIM) if bank else 0, anchors=anchors)
    expected = []
    for _ in range(2 if bank else 1):
        for v in views:
            v.grad = None
        loss = _step(reference, views, labels, anchors, deferred=False)
        loss.backward()
        expected.append(loss.detach())

    # DDP averages over processes: the mean of the local losses is the global loss ...
    mean_loss = (results[0][0] + results[1][0]) / WORLD
    torch.testing.assert_close(mean_loss, torch.stack(expected))
    # ... and each process's gradient, averaged as DDP does, is the single-process gradient.
    for rank in range(WORLD):
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        for grad, v in zip(results[rank][1], views):
            torch.testing.assert_close(grad / WORLD, v.grad[rows])


def _uneven_worker(rank: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        views = [torch.randn(BATCH - rank, DIM) for _ in range(2)]  # rank 1 has one row fewer
        try:
            TCLLoss(gather_distributed=True)(*views)
            results[rank] = "no error"
        except ValueError as error:
            results[rank] = str(error)
    finally:
        torch_dist.destroy_process_group()


def test_uneven_batches_across_processes_are_refused_on_every_process():
    results = mp.Manager().dict()
    mp.spawn(_uneven_worker, args=(_free_port(), results), nprocs=WORLD, join=True)  # returns: no hang
    expected = f"gather_distributed needs the same batch size on every process, got [{BATCH}, {BATCH - 1}] (by rank)"
    assert all(results[rank].startswith(expected) for rank in range(WORLD)), dict(results)


def _lightly_bank_worker(rank: int, port: int, results) -> None:
    """Per process: lightly's NTXentLoss and ours with a gathered memory bank, 3 steps side by side."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        theirs = NTXentLoss(temperature=0.3, memory_bank_size=(20, DIM), gather_distributed=True)
        torch.manual_seed(0)
        ours = TCLLoss(
            temperature=0.3, k1=0.0, memory_bank_size=(20, DIM), memory_bank_mode="lightly", gather_distributed=True
        )
        gen = torch.Generator().manual_seed(10 + rank)
        report = []
        for _ in range(3):
            out0, out1 = torch.randn(BATCH, DIM, generator=gen), torch.randn(BATCH, DIM, generator=gen)
            values, grads = [], []
            for loss_fn in (theirs, ours):
                a, b = out0.clone().requires_grad_(), out1.clone().requires_grad_()
                value = loss_fn(a, b)
                value.backward()
                values.append(value.detach())
                grads.append(torch.cat([a.grad, b.grad]))
            report.append(
                (
                    float((values[0] - values[1]).abs()),
                    float((grads[0] - grads[1]).abs().max()),
                    torch.equal(theirs.memory_bank.bank, ours.memory_bank.bank),
                    int(ours.memory_bank.bank_ptr),
                )
            )
        results[rank] = (report, ours.memory_bank.bank.clone())
    finally:
        torch_dist.destroy_process_group()


def test_lightly_bank_mode_equals_lightly_ntxent_with_a_gathered_bank_on_two_processes():
    results = mp.Manager().dict()
    mp.spawn(_lightly_bank_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        report, _ = results[rank]
        for step, (value_gap, grad_gap, same_bank, _) in enumerate(report):
            assert value_gap < 2e-6 and grad_gap < 1e-6 and same_bank, (rank, step, report)
        # 2 x 8 gathered keys a step into 20 slots: 16, then the end is reached (0), then 16
        assert [pointer for *_, pointer in report] == [16, 0, 16]
    assert torch.equal(results[0][1], results[1][1])  # the gathered keys: one bank on every process
