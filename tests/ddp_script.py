"""A few TCL steps through Lightning on ``--devices`` CPU processes (gloo), for test_ddp.py.

Run as a script (Lightning's DDP launcher starts the other processes by running it again).
Process 0 saves to ``--out``: the loss of each step (averaged over the processes: the global
batch's loss), the final weights, and the backbone's features of every image, embedded by
the processes in shards and gathered (:func:`tcl_ssl.evaluation.features.gather_features`).

The backbone and head have no BatchNorm (whose statistics are per process unless synchronised,
which torch does only on GPUs) and the two views are fixed functions of the image, so that one
process on a batch of ``2B`` and two processes on ``B`` each compute the same thing.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DistributedSampler

from tcl_ssl.data import ResumableDataLoader, Split, batch_loader
from tcl_ssl.evaluation.features import gather_features
from tcl_ssl.methods import OptimConfig, method_class
from tcl_ssl.processes import end_process_group

IMAGES = 96


class FixedViews(nn.Module):
    """Two views without randomness: the image and its mirror image, in [0, 1]."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float() / 255.0
        return [x, x.flip(-1)]


class Preprocess(nn.Module):
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images.float() / 255.0]


class GlobalLoss(Callback):
    """The mean over the processes of each step's training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(pl_module.all_gather(outputs["loss"].detach()).mean()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True, help="per process")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    gen = torch.Generator().manual_seed(1)
    split = Split(
        torch.randint(0, 256, (IMAGES, 3, 8, 8), dtype=torch.uint8, generator=gen),
        torch.randint(0, 4, (IMAGES,), generator=gen),
    )
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    optim = OptimConfig(lr=0.5, weight_decay=1e-4, warmup_epochs=0, batch_size=args.batch_size)
    method = method_class("tcl")(
        backbone, 16, FixedViews(), supervised=False, num_classes=4, optim=optim, temperature=0.2, k1=10.0
    )
    method.projection_head = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))  # lightly's has BatchNorm
    initial = {key: value.clone() for key, value in method.state_dict().items()}
    record = GlobalLoss()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    loader = batch_loader(split, args.batch_size, shuffle=False, drop_last=True)
    if args.devices == 1:
        # the order Lightning's DistributedSampler (shuffle, seed 0) deals out to the processes of
        # a DDP run, in one process: global batch k of the DDP run is this run's batch k
        loader = ResumableDataLoader(
            loader.dataset,
            batch_size=args.batch_size,
            drop_last=True,
            collate_fn=loader.collate_fn,
            sampler=DistributedSampler(loader.dataset, num_replicas=1, rank=0, seed=0),
        )
    trainer.fit(method, loader)
    features = gather_features(method.backbone, split, Preprocess())
    if trainer.is_global_zero:
        torch.save(
            {
                "losses": record.losses,
                "initial": initial,
                "state_dict": method.state_dict(),
                "features": features,
                "world_size": trainer.world_size,
            },
            args.out,
        )
    end_process_group()  # a process that exits with its gloo group alive may abort (exit -6)


if __name__ == "__main__":
    main()
