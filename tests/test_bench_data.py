"""`tcl-ssl bench data` on a tiny synthetic folder: every row is measured, the ratios are the
throughputs' ratios, the table formats, a missing litdata gives a skipped row, and (where litdata
is installed) its batches hold our decoder's pixels. A smoke test of the plumbing, not a timing."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from tcl_ssl.bench import data as bench_data
from tcl_ssl.data.sources import decode_file

CLASSES, PER_CLASS, SIZE, BATCH = 3, 12, 16, 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 12 small RGB PNGs of 20 x 24 px (not square, so that the decode resizes and crops)."""
    from torchvision.io import write_png

    root = tmp_path_factory.mktemp("bench-data")
    gen = torch.Generator().manual_seed(0)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir()
        for i in range(PER_CLASS):
            write_png(
                torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=gen),
                str(root / f"class{c}" / f"{i:02d}.png"),
            )
    return root


def _run(folder, sources, tmp_path, **kwargs):
    return bench_data.run(
        folder,
        num_images=30,
        image_size=SIZE,
        batch_size=BATCH,
        workers=0,
        epochs=1,
        sources=sources,
        work_dir=tmp_path,
        **kwargs,
    )


def _check_measured(row):
    assert row["status"] == "ok"
    for key in ("images_per_s", "epoch1_images_per_s", "batches_per_s"):
        assert math.isfinite(row[key]) and row[key] > 0, (row["source"], key, row[key])
    assert math.isnan(row["later_images_per_s"])  # one epoch: no later epochs
    assert row["images_per_s"] == pytest.approx(row["epoch1_images_per_s"])
    assert row["images_per_s"] == pytest.approx(BATCH * row["batches_per_s"])
    assert row["images_per_epoch"] == 24  # 30 images, whole batches of 8
    assert row["prep_s"] >= 0 and row["disk_bytes"] > 0 and row["peak_rss"] > 0
    assert 1 <= row["labels_per_batch"] <= CLASSES
    assert row["pixels_equal"] is True


def test_select_images_takes_the_classes_in_turn(folder):
    files, labels, classes = bench_data.select_images(folder, 7)
    assert classes == ["class0", "class1", "class2"]
    assert labels == [0, 0, 0, 1, 1, 2, 2]  # 3 + 2 + 2, in listing order
    assert [f.name for f in files] == ["00.png", "01.png", "02.png", "00.png", "01.png", "00.png", "01.png"]
    with pytest.raises(ValueError, match="only 36 images"):
        bench_data.select_images(folder, 37)


def test_memory_and_stream_rows(folder, tmp_path, one_thread):
    result = _run(folder, ("memory", "stream"), tmp_path)
    rows = result["rows"]
    assert [r["source"] for r in rows] == ["memory", "stream"] and result["images"] == 30
    for row in rows:
        _check_measured(row)
    memory = rows[0]["images_per_s"]
    for row in rows:
        assert row["vs_memory"] == pytest.approx(row["images_per_s"] / memory)
    assert rows[0]["vs_memory"] == pytest.approx(1.0)
    table = bench_data.format_table(result)
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "x memory" in lines[0] and bench_data.LABELS["stream"] in table
    report = bench_data.format_report(result)
    assert table in report and "30 images of 3 classes" in report


def test_litdata_row_is_skipped_without_litdata(folder, tmp_path, monkeypatch, one_thread):
    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata raises ImportError
    result = _run(folder, ("stream", "litdata", "litdata-canvas"), tmp_path)
    stream, *skipped = result["rows"]
    assert stream["vs_memory"] is None  # no memory row to compare with
    for row in skipped:
        assert row["status"].startswith("skipped: litdata is not installed")
    lines = bench_data.format_table(result).splitlines()
    assert len(lines) == 5 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| " in lines[-1] and "skipped" in lines[-1]


def test_litdata_rows_give_our_pixels(folder, tmp_path, one_thread):
    pytest.importorskip("litdata")
    result = _run(folder, ("memory", "litdata", "litdata-canvas"), tmp_path)
    memory, *rows = result["rows"]
    for row in rows:
        _check_measured(row)
        assert row["vs_memory"] == pytest.approx(row["images_per_s"] / memory["images_per_s"])
    # the loaders' batches themselves: every image equals decode_file's, the labels match
    import litdata

    files, labels, _ = bench_data.select_images(folder, 30)
    decoded = torch.stack([decode_file(f, SIZE) for f in files])
    for name, canvas in (("litdata-jpeg", False), ("litdata-canvas", True)):
        dataset = litdata.StreamingDataset(str(tmp_path / name), shuffle=True, drop_last=True, seed=0)
        loader = litdata.StreamingDataLoader(
            dataset, batch_size=BATCH, num_workers=0, collate_fn=bench_data.DecodeBatch(SIZE, 3, encoded=not canvas)
        )
        seen = 0
        for images, batch_labels in loader:
            assert images.dtype == torch.uint8 and images.shape == (BATCH, 3, SIZE, SIZE)
            for image, label in zip(images, batch_labels):
                match = (decoded == image).flatten(1).all(dim=1).nonzero().flatten().tolist()
                assert match and labels[match[0]] == int(label)
            seen += len(images)
        assert seen == 24
