"""Losing nothing: exact resume after a kill, atomic checkpoints, a stop at the first non-finite loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from tcl_ssl.checkpointing import SCALER_PATIENCE, AtomicCheckpointIO, NonFiniteLossError, NonFiniteLossGuard
from tcl_ssl.config import PretrainConfig
from tcl_ssl.loss import TCLLoss
from tcl_ssl.runs import read_record, read_summary
from tcl_ssl.train import pretrain

STEPS_PER_EPOCH = 10


def _pretrain_command(images, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tcl_ssl.cli",
        "pretrain",
        "--dataset",
        str(images),
        "--image-size",
        "16",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--limit-train-batches",
        str(STEPS_PER_EPOCH),
        "--checkpoint-every-n-steps",
        "2",
        "--knn-every",
        "0",
        "--protocols",
        "knn",
        "--no-plots",
        "--knn-k",
        "5",
    ]


def _write_images(root, per_class: int = 150) -> None:
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for cls, level in (("dark", 60), ("light", 190)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            image = (level + torch.randint(-60, 60, (3, 16, 16), generator=gen)).clamp(0, 255).to(torch.uint8)
            write_png(image, str(root / cls / f"{i}.png"))


def _global_step(checkpoint) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"]


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    _write_images(tmp_path / "images")
    env = os.environ | {"TCL_SSL_CACHE": str(tmp_path / "cache")}
    command = lambda out: _pretrain_command(tmp_path / "images", tmp_path / out)  # noqa: E731
    subprocess.run(command("whole"), check=True, env=env, capture_output=True)

    killed = subprocess.Popen(command("killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not (checkpoint.is_file() and _global_step(checkpoint) >= STEPS_PER_EPOCH + 4):
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    at_kill = _global_step(checkpoint)
    assert STEPS_PER_EPOCH < at_kill < 2 * STEPS_PER_EPOCH, at_kill  # a checkpoint in the middle of epoch 2
    assert not (tmp_path / "killed" / "summary.json").exists()

    # the same command again continues the run from its last checkpoint
    resumed = subprocess.run(command("killed"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming it from its last checkpoint" in resumed.stderr
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    again = torch.load(checkpoint, weights_only=True)
    assert whole["global_step"] == again["global_step"] == 2 * STEPS_PER_EPOCH and again["epoch"] == 1
    assert whole["state_dict"].keys() == again["state_dict"].keys()
    different = [k for k in whole["state_dict"] if not torch.equal(whole["state_dict"][k], again["state_dict"][k])]
    assert not different, different[:5]  # bit for bit: weights, BN statistics, online probe
    assert read_summary(tmp_path / "killed").test == read_summary(tmp_path / "whole").test
    (record,) = read_record(tmp_path / "killed").resumes
    assert record["changed"] == {}


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, small_digits, monkeypatch):
    from tcl_ssl.methods.tcl import TCL

    honest = TCL.training_loss

    def breaks_at_step_3(self, views, labels):
        loss = honest(self, views, labels)
        return loss * float("nan") if self.global_step == 2 else loss  # the third step

    monkeypatch.setattr(TCL, "training_loss", breaks_at_step_3)
    config = PretrainConfig.build(
        epochs=1,
        batch_size=32,
        limit_train_batches=6,
        checkpoint_every_n_steps=1,
        knn_every=0,
        plots=False,
        out=str(tmp_path / "run"),
    )
    with pytest.raises(NonFiniteLossError, match="NaN or inf at step 3.*lower --lr"):
        pretrain(config, data=small_digits)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def _trainer(scaler: bool):
    return SimpleNamespace(
        global_step=7, world_size=1, precision_plugin=SimpleNamespace(scaler=object() if scaler else None)
    )


def test_non_finite_losses_under_a_float16_grad_scaler_are_left_to_the_scaler():
    guard = NonFiniteLossGuard()
    nan, one = {"loss": torch.tensor(float("nan"))}, {"loss": torch.tensor(1.0)}
    for _ in range(SCALER_PATIENCE - 1):  # skipped steps, as GradScaler does after an overflow
        guard.on_train_batch_end(_trainer(scaler=True), None, nan, None, 0)
    guard.on_train_batch_end(_trainer(scaler=True), None, one, None, 0)  # a good step resets the count
    for _ in range(SCALER_PATIENCE - 1):
        guard.on_train_batch_end(_trainer(scaler=True), None, nan, None, 0)
    with pytest.raises(NonFiniteLossError, match=f"{SCALER_PATIENCE} steps in a row"):
        guard.on_train_batch_end(_trainer(scaler=True), None, nan, None, 0)
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        NonFiniteLossGuard().on_train_batch_end(
            _trainer(scaler=False), None, {"loss": torch.tensor(float("inf"))}, None, 0
        )


def test_the_training_loss_lets_non_finite_projections_through_to_the_guard():
    views = torch.randn(4, 8), torch.randn(4, 8)
    views[0][1, 2] = float("inf")  # a float16 overflow in a projection
    with pytest.raises(ValueError, match="non-finite"):
        TCLLoss()(*views)
    assert torch.isnan(TCLLoss(check_inputs=False)(*views))  # NaN, for the guard or the GradScaler


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind


def test_a_resume_checks_the_archive_once_and_lightning_alone_checks_it_too(tmp_path, monkeypatch):
    import tcl_ssl.checkpointing as checkpointing
    from tcl_ssl.safe_io import DamagedFileError

    checks = []
    real = checkpointing.check_archive
    monkeypatch.setattr(checkpointing, "check_archive", lambda *a, **k: checks.append(a[0]) or real(*a, **k))
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {}, "pytorch-lightning_version": "2", "global_step": 3}, path)
    assert checkpointing.read_checkpoint(path)["global_step"] == 3  # the preflight check
    assert io.load_checkpoint(path)["global_step"] == 3 and len(checks) == 1  # not checked again
    io.save_checkpoint({"state_dict": {}, "pytorch-lightning_version": "2", "global_step": 4}, path)
    assert io.load_checkpoint(path)["global_step"] == 4 and len(checks) == 2  # a changed file is
    torch.save({"foo": 1}, path)
    with pytest.raises(DamagedFileError, match="is not a checkpoint written by tcl-ssl pretrain"):
        io.load_checkpoint(path)  # a library user's Trainer(plugins=[AtomicCheckpointIO()]), ckpt_path


def test_a_float16_overflow_in_the_projections_is_skipped_by_the_grad_scaler(small_digits, monkeypatch):
    """TCL under 16-mixed with a GradScaler (on the CPU here, built by hand: Lightning turns CPU
    16-mixed into bf16-mixed): an inf in one step's projections gives a NaN loss, the scaler skips
    that step and halves its scale, the guard lets it pass, and training goes on."""
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    from tcl_ssl.data import batch_loader
    from tcl_ssl.methods.tcl import TCL
    from tcl_ssl.train import build_method

    honest = TCL.project_views

    def overflows_at_step_3(self, views, head):
        projections = honest(self, views, head)
        if self.global_step != 2:
            return projections
        first = projections[0].clone()
        first[0, 0] = float("inf")
        return (first, *projections[1:])

    monkeypatch.setattr(TCL, "project_views", overflows_at_step_3)
    scales = []

    class RecordScale(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            scales.append(trainer.precision_plugin.scaler.get_scale())

    method = build_method(PretrainConfig.build(batch_size=8).resolved(), small_digits)  # float16 is slow on a CPU
    precision = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        plugins=[precision],
        callbacks=[NonFiniteLossGuard(), RecordScale()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, train_dataloaders=batch_loader(small_digits.train, 8, shuffle=True, drop_last=True))
    assert scales == [1024.0, 1024.0, 512.0, 512.0]  # only the overflowing step was skipped
