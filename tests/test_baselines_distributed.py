"""SupCon on 2 CPU processes (gloo), gathering the global batch, equals one process on the whole batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

from tcl_ssl.methods import method_class

WORLD = 2
BATCH = 6  # per process
DIM = 8


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * BATCH, DIM, generator=gen), torch.randint(0, 3, (WORLD * BATCH,), generator=gen)


def _supcon():
    return method_class("supcon")(nn.Identity(), DIM, nn.Identity(), supervised=True, hidden_dim=4, output_dim=4)


def _worker(rank: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        embeddings, labels = _inputs()
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        local = embeddings[rows].clone().requires_grad_(True)
        loss = _supcon().contrast(local, labels[rows])
        loss.backward()
        results[rank] = (loss.detach(), local.grad.clone())
    finally:
        torch_dist.destroy_process_group()


def test_supcon_on_two_processes_matches_one_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=WORLD, join=True)

    embeddings, labels = _inputs()
    embeddings.requires_grad_(True)
    expected = _supcon().contrast(embeddings, labels)
    expected.backward()
    for rank in range(WORLD):
        loss, grad = results[rank]
        torch.testing.assert_close(loss, expected.detach())  # every process computes the global loss
        # DDP averages the processes' gradients: each holds WORLD x its rows' share of the global one
        torch.testing.assert_close(grad / WORLD, embeddings.grad[rank * BATCH : (rank + 1) * BATCH])
