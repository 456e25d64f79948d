"""The tests that need a CUDA GPU (``pytest -m cuda``; skipped without one): the non-finite check
on the device (its deferred read through pinned memory, and a real bf16 run it stops), pinned
batches from streamed folders, and a pretraining run on the GPU. The augmentation on the device
and views on two devices are tested in test_augmentations.py and test_bad_input.py, also marked
``cuda``. ``scripts/gpu_check.sh`` runs them all."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tcl_ssl.checkpointing import NonFiniteLossError, NonFiniteLossGuard
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import batch_loader, list_image_folder
from tcl_ssl.data.streaming import FileSplit
from tcl_ssl.runs import read_record
from tcl_ssl.train import pretrain

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _trainer(step: int):
    return SimpleNamespace(global_step=step, world_size=1, precision_plugin=SimpleNamespace(scaler=None))


def _config(tmp_path, **overrides) -> PretrainConfig:
    base = dict(
        epochs=1,
        batch_size=32,
        limit_train_batches=4,
        knn_every=0,
        protocols=["knn"],
        plots=False,
        accelerator="gpu",
        devices=1,
        out=str(tmp_path / "run"),
    )
    return PretrainConfig.build(**(base | overrides))


def test_the_non_finite_check_on_the_gpu_is_read_a_step_later():
    """A CUDA loss is copied to pinned host memory behind an event; a NaN at step 4 is raised when
    step 5 ends (or when training ends), not while step 4 is in flight."""
    guard = NonFiniteLossGuard()
    guard.on_train_batch_end(_trainer(3), None, {"loss": torch.tensor(1.0, device="cuda")}, None, 0)
    guard.on_train_batch_end(_trainer(4), None, {"loss": torch.tensor(float("nan"), device="cuda")}, None, 0)
    host, event, step = guard._pending  # the check in flight: a pinned host copy behind an event
    assert host.is_pinned() and not host.is_cuda and event is not None and step == 4
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        guard.on_train_batch_end(_trainer(5), None, {"loss": torch.tensor(1.0, device="cuda")}, None, 0)

    at_the_end = NonFiniteLossGuard()
    at_the_end.on_train_batch_end(_trainer(9), None, {"loss": torch.tensor(float("inf"), device="cuda")}, None, 0)
    with pytest.raises(NonFiniteLossError, match="at step 9"):
        at_the_end.on_train_end(_trainer(9), None)


def test_a_nan_in_a_bf16_gpu_run_stops_it_and_keeps_the_last_good_checkpoint(tmp_path, small_digits, monkeypatch):
    from tcl_ssl.methods.tcl import TCL  # the method under test, patched below

    honest = TCL.training_loss

    def breaks_at_step_3(self, views, labels):
        loss = honest(self, views, labels)
        return loss * float("nan") if self.global_step == 2 else loss  # the third step

    monkeypatch.setattr(TCL, "training_loss", breaks_at_step_3)
    with pytest.raises(NonFiniteLossError, match="NaN or inf at step 3"):
        pretrain(_config(tmp_path, limit_train_batches=6, checkpoint_every_n_steps=1), data=small_digits)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_streamed_batches_arrive_in_pinned_memory(image_folder):
    files, labels, _ = list_image_folder(image_folder)
    split = FileSplit.from_paths(files, labels, 16, workers=1)
    images, batch_labels = next(iter(batch_loader(split, batch_size=8, shuffle=True, drop_last=True)))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8
    assert images.is_pinned() and batch_labels.is_pinned()
    assert images.cuda(non_blocking=True).device.type == "cuda"


def test_a_pretraining_run_on_the_gpu_uses_bf16_the_cifar_stem_and_records_cuda_memory(tmp_path, small_digits):
    summary = pretrain(_config(tmp_path), data=small_digits)
    config = read_record(tmp_path / "run").config
    assert config.trainer.precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert config.model.stem == "small"  # 28 px digits: the full-resolution stem on a GPU
    assert summary.peak_memory.cuda_allocated_mib is not None and summary.peak_memory.cuda_allocated_mib > 0
    assert summary.images_per_second > 0 and 10.0 < summary.test["knn_top1"] <= 100.0
