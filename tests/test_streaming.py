"""The streaming source: image folders read from their files by DataLoader workers, never held in memory."""

from __future__ import annotations

import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torchvision.io import write_png

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import FileSplit, batch_loader, load_dataset, streaming
from tcl_ssl.runs import read_record
from tcl_ssl.train import build_method, pretrain

BIG = 20_000  # images in the memory test's folder
BIG_DECODE = 128  # decoded side: in memory, the folder would take BIG * 3 * 128 * 128 bytes = 983 MB


def _folder(root, classes=4, per_class=50, side=12, seed=0):
    """``classes`` folders of random PNGs (each class a different brightness), ``side x (side + 4)`` px."""
    gen = torch.Generator().manual_seed(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 128, (3, side, side + 4), dtype=torch.uint8, generator=gen) + 32 * c
            write_png(image, str(root / f"c{c}" / f"{i:05d}.png"))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("big"), classes=10, per_class=BIG // 10, side=8)


def _rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RecordMemory(Callback):
    def __init__(self) -> None:
        self.rss: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rss.append(_rss())


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc")
def test_streaming_keeps_memory_flat_on_20000_images(big_folder, tmp_path):
    in_memory = streaming.decoded_bytes(BIG, BIG_DECODE)
    # the same path once on a small folder first, so that what it imports is not counted
    load_dataset(str(_folder(tmp_path / "small", per_class=10)), source="stream", decode_size=BIG_DECODE, workers=2)
    before = _rss()
    data = load_dataset(str(big_folder), source="stream", decode_size=BIG_DECODE, image_size=16, workers=2)
    loaded = _rss() - before
    assert data.streamed and sum(data.sizes().values()) == BIG and data.image_size == 16
    assert data.train.image_size == BIG_DECODE
    # the file names and labels only: a small fraction of the decoded images
    assert loaded < in_memory / 8, (loaded, in_memory)

    config = PretrainConfig.build(method="tcl", batch_size=64, epochs=1, out=str(tmp_path / "run")).resolved()
    method = build_method(config, data)
    memory = _RecordMemory()
    steps, settled = 40, 5
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[memory],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, batch_loader(data.train, 64, shuffle=True, drop_last=True))
    assert len(memory.rss) == steps
    growth = max(memory.rss[settled:]) - memory.rss[settled]  # once the steps have allocated what they need
    read = (steps - settled) * 64 * 3 * BIG_DECODE**2  # bytes of the images decoded meanwhile
    assert growth < read / 4, ([r // 2**20 for r in memory.rss], read // 2**20)


def test_streamed_batches_are_the_in_memory_batches(tmp_path):
    folder = _folder(tmp_path / "images", per_class=40)
    memory = load_dataset(str(folder), source="memory", image_size=16)
    stream = load_dataset(str(folder), source="stream", image_size=16, workers=2)
    assert not memory.streamed and stream.streamed
    assert stream.sizes() == memory.sizes()
    for name in ("train", "val", "test"):
        assert torch.equal(stream.split(name).labels, memory.split(name).labels)
    # every image is in the sample the statistics are estimated from: they are the same
    np.testing.assert_allclose(stream.mean, memory.mean, atol=1e-9)
    np.testing.assert_allclose(stream.std, memory.std, atol=1e-9)
    for epoch in (0, 1):
        loaders = [batch_loader(d.train, 16, shuffle=True, drop_last=True, seed=5) for d in (memory, stream)]
        for loader in loaders:
            loader.batch_sampler.sampler.set_epoch(epoch)
        pairs = list(zip(*loaders))
        assert len(pairs) == len(memory.train) // 16
        for (a, la), (b, lb) in pairs:
            assert a.dtype == b.dtype == torch.uint8 and a.shape == (16, 3, 16, 16)
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_statistics_from_a_sample_are_close(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images", per_class=60)
    exact = load_dataset(str(folder), source="memory", image_size=16)
    monkeypatch.setattr(streaming, "STATS_SAMPLE", 50)
    monkeypatch.setattr(FileSplit.stats, "__defaults__", (50,))
    sampled = load_dataset(str(folder), source="stream", image_size=16, workers=0)
    assert sampled.mean != exact.mean
    np.testing.assert_allclose(sampled.mean, exact.mean, atol=0.02)
    np.testing.assert_allclose(sampled.std, exact.std, atol=0.02)


def test_a_resumed_streamed_epoch_skips_without_decoding(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images", per_class=20)
    data = load_dataset(str(folder), source="stream", image_size=16, workers=0)
    full = list(batch_loader(data.train, 8, shuffle=True, drop_last=True, seed=1))
    decoded = []
    original = streaming.DecodedFiles._decode
    monkeypatch.setattr(streaming.DecodedFiles, "_decode", lambda self, i: decoded.append(i) or original(self, i))
    resumed = batch_loader(data.train, 8, shuffle=True, drop_last=True, seed=1)
    resumed.load_state_dict({"epoch": 0, "batches": 5})
    rest = list(resumed)
    assert len(rest) == len(full) - 5 and len(decoded) == 8 * len(rest)
    for (a, la), (b, lb) in zip(rest, full[5:]):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert resumed.state_dict() == {"epoch": 0, "batches": len(full)}


def test_auto_streams_only_what_does_not_fit(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images", per_class=10)
    monkeypatch.setattr(streaming, "memory_budget", lambda: streaming.decoded_bytes(40, 32) - 1)
    assert load_dataset(str(folder), workers=0).streamed
    monkeypatch.setattr(streaming, "memory_budget", lambda: streaming.decoded_bytes(40, 32))
    assert not load_dataset(str(folder), workers=0).streamed
    with pytest.raises(ValueError, match="data source must be one of auto, memory, stream, got 'disk'"):
        load_dataset(str(folder), source="disk")
    with pytest.raises(ValueError, match="streaming and decode_size apply to image folders only"):
        load_dataset("mnist5k", source="stream")


def test_decode_size_sets_the_canvas_and_image_size_the_views(tmp_path):
    folder = _folder(tmp_path / "images", per_class=10)
    data = load_dataset(str(folder), source="stream", decode_size=24, image_size=16, workers=0)
    assert data.train.image_size == 24 and data.image_size == 16
    images, _ = next(iter(batch_loader(data.train, 8, shuffle=False, drop_last=False)))
    assert images.shape == (8, 3, 24, 24)


def test_pretrain_streamed_is_pretrain_in_memory(tmp_path):
    """Same batches, same statistics, same random streams: the same weights and figures."""
    folder = _folder(tmp_path / "images", per_class=30)
    summaries, weights = {}, {}
    for source in ("memory", "stream"):
        config = PretrainConfig.build(
            dataset=str(folder),
            data_source=source,
            workers=1,
            image_size=16,
            epochs=1,
            batch_size=16,
            knn_k=5,
            protocols=["knn"],
            plots=False,
            out=str(tmp_path / source),
        )
        summaries[source] = pretrain(config)
        weights[source] = torch.load(tmp_path / source / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert summaries["stream"].test == summaries["memory"].test
    assert summaries["stream"].final_train_loss == summaries["memory"].final_train_loss
    assert weights["stream"].keys() == weights["memory"].keys()
    for key, value in weights["memory"].items():
        assert torch.equal(weights["stream"][key], value), key


def test_a_corrupt_streamed_file_is_named_or_skipped(tmp_path, capsys):
    folder = _folder(tmp_path / "images", per_class=12)
    bad = folder / "c1" / "00003.png"
    bad.write_bytes(b"not an image")
    argv = [
        "pretrain",
        "--dataset",
        str(folder),
        "--data-source",
        "stream",
        "--workers",
        "1",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--knn-every",
        "0",
        "--no-plots",
        "--protocols",
        "knn",
        "--knn-k",
        "3",
    ]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert f"cannot decode image file {str(bad)!r}" in err and "--skip-bad-images" in err

    data = load_dataset(str(folder), source="stream", image_size=16, skip_bad_images=True, workers=0)
    split = next(s for s in (data.train, data.val, data.test) if any(f.endswith(b"c1/00003.png") for f in s.files))
    index = int(np.flatnonzero([f.endswith(b"c1/00003.png") for f in split.files])[0])
    image, label = split.dataset()[index]
    following = split.dataset()[(index + 1) % len(split)]
    assert torch.equal(image, following[0]) and label == following[1]


def test_a_resumed_run_keeps_the_data_source_it_started_with(tmp_path, monkeypatch):
    """auto decides by this machine's memory; a resumed run must not flip (the splits could differ)."""
    folder = _folder(tmp_path / "images", per_class=10)
    config = PretrainConfig.build(
        dataset=str(folder),
        workers=0,
        image_size=16,
        epochs=1,
        batch_size=8,
        knn_k=3,
        knn_every=0,
        protocols=["knn"],
        plots=False,
        out=str(tmp_path / "run"),
    )
    monkeypatch.setattr(streaming, "memory_budget", lambda: 0)  # auto streams
    pretrain(config)
    assert read_record(tmp_path / "run").dataset.streamed is True
    monkeypatch.setattr(streaming, "memory_budget", lambda: 2**40)  # auto would now hold it in memory
    pretrain(config.replace(epochs=2, resume=str(tmp_path / "run")))
    assert read_record(tmp_path / "run").dataset.streamed is True
