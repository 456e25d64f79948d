"""Precision on the CPU: the default, bf16-mixed training in channels-last memory format, and a
resumed run keeping its precision when the default differs."""

from __future__ import annotations

import pytest
import torch

from tcl_ssl import train
from tcl_ssl.config import PretrainConfig
from tcl_ssl.methods import trains_channels_last
from tcl_ssl.runs import read_record, read_summary
from tcl_ssl.train import default_precision, pretrain


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_default_is_float32(no_cuda):
    # bf16-mixed was faster on this project's AMX CPU from 64 px but not within the seed spread of
    # float32's validation kNN (docs/benchmarks/training.md), so the CPU default stays float32
    for accelerator in ("cpu", "auto"):
        assert default_precision(accelerator) == "32-true"


def test_channels_last_only_for_bf16_on_the_cpu():
    assert trains_channels_last(torch.device("cpu"), "bf16-mixed")
    assert not trains_channels_last(torch.device("cpu"), "32-true")
    assert not trains_channels_last(torch.device("cuda"), "bf16-mixed")


def _config(tmp_path, **overrides) -> PretrainConfig:
    base = dict(
        epochs=2,
        batch_size=32,
        limit_train_batches=3,
        out=str(tmp_path / "run"),
        knn_k=20,
        plots=False,
        protocols=["knn"],
        accelerator="cpu",
    )
    return PretrainConfig.build(**(base | overrides))


def _step_losses(run) -> list[float]:
    rows = (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("train_loss_step")
    return [float(row.split(",")[column]) for row in rows[1:] if row.split(",")[column]]


def test_a_bf16_run_trains_channels_last_and_follows_the_float32_run(
    tmp_path, small_digits, one_thread, no_cuda, monkeypatch
):
    seen = []
    built: list = []
    build_method = train.build_method

    def recording_build_method(config, data):
        method = build_method(config, data)
        original = method.training_step

        def training_step(batch, batch_idx):
            # (a one-channel image batch is channels-last contiguous in both formats: look at a 64-channel weight)
            seen.append(
                (
                    method.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last),
                    torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16,
                )
            )
            return original(batch, batch_idx)

        method.training_step = training_step
        built.append(method)
        return method

    monkeypatch.setattr(train, "build_method", recording_build_method)
    options = dict(epochs=1, limit_train_batches=2, knn_every=1, metrics_every_n_steps=1)
    summary = pretrain(_config(tmp_path, precision="bf16-mixed", **options), data=small_digits)
    assert seen and all(all(flags) for flags in seen)  # every step: bf16 autocast, channels-last
    assert built[0].backbone.layer1[0].conv1.weight.is_contiguous()  # back to the contiguous format after fit
    assert 10.0 < summary.val["knn_top1"] <= 100.0 and read_summary(tmp_path / "run") == summary
    seen.clear()
    pretrain(_config(tmp_path, precision="32-true", out=str(tmp_path / "fp32"), **options), data=small_digits)
    assert seen and not any(any(flags) for flags in seen)  # float32: no autocast, contiguous
    bf16, fp32 = _step_losses(tmp_path / "run"), _step_losses(tmp_path / "fp32")
    # the same weights and views: the first step's loss differs by bfloat16's rounding only
    assert len(bf16) == len(fp32) == 2 and bf16[0] == pytest.approx(fp32[0], rel=0.02) and bf16[0] != fp32[0]


def test_a_resumed_run_keeps_its_precision_when_the_default_differs(
    tmp_path, small_digits, one_thread, no_cuda, monkeypatch
):
    options = dict(limit_train_batches=2, knn_every=0)
    pretrain(_config(tmp_path, epochs=1, **options), data=small_digits)  # 28 px, imagenet stem: float32
    assert read_record(tmp_path / "run").config.trainer.precision == "32-true"
    monkeypatch.setattr(train, "default_precision", lambda *args: "bf16-mixed")  # the default changed since
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = _config(tmp_path, epochs=2, resume=str(checkpoint), **options)
    assert train.resolved_precision(resumed.replace(resume=None)) == "bf16-mixed"
    assert train.resolved_precision(resumed) == "32-true"
    pretrain(resumed, data=small_digits)
    assert read_record(tmp_path / "run").config.trainer.precision == "32-true"
