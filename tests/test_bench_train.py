"""`tcl-ssl bench train` on a tiny run: every row is measured, the ratios are the throughputs'
ratios, the table formats. A smoke test of the benchmark's plumbing, not a timing."""

from __future__ import annotations

import math

import pytest

from tcl_ssl.bench import train as bench_train


@pytest.fixture(scope="module")
def rows(one_thread) -> list[dict]:
    # 16 px, batch 16, 1 + 6 steps, random images, lightly's row without worker processes; one
    # torch thread, so that other load on the machine does not stall the steps' thread barriers
    return bench_train.run(
        num_images=48, image_size=16, batch_size=16, steps=6, warmup=1, device="cpu", num_workers=0, dataset="random"
    )


def test_every_row_is_measured(rows):
    names = [row["row"] for row in rows]
    assert names == [f"{bench_train.ROW_OURS}, memory", bench_train.ROW_LIGHTLY, bench_train.ROW_FLOOR]
    for row in rows:
        assert math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0
        assert row["peak_bytes"] >= 0
        assert row["steps"] == 6 and row["batch_size"] == 16 and row["device"] == "cpu"
        assert row["images"] == "48 random images"
        assert row["rounds"] == [row["images_per_s"]] and row["num_rounds"] == 1


def test_ratios_are_the_throughputs_ratios(rows):
    by_name = {row["row"]: row["images_per_s"] for row in rows}
    lightly, floor = by_name[bench_train.ROW_LIGHTLY], by_name[bench_train.ROW_FLOOR]
    for row in rows:
        assert row["vs_lightly"] == pytest.approx(row["images_per_s"] / lightly)
        assert row["vs_floor"] == pytest.approx(row["images_per_s"] / floor)
    assert rows[1]["vs_lightly"] == pytest.approx(1.0) and rows[2]["vs_floor"] == pytest.approx(1.0)


def test_table_formats(rows):
    table = bench_train.format_table(rows).splitlines()
    assert table[0] == "| row | images/s | x (b) | x (c) | peak memory MiB |"
    assert len(table) == 2 + len(rows)
    for line, row in zip(table[2:], rows):
        assert line.startswith(f"| {row['row']}: ") and f"| {row['vs_lightly']:.2f} | {row['vs_floor']:.2f} |" in line


def test_main_prints_the_table(rows, monkeypatch, capsys):
    monkeypatch.setattr(bench_train, "run", lambda *args, **kwargs: rows)
    assert bench_train.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert bench_train.format_table(rows) in out and "x the floor (c)" in out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=("nowhere",)), "unknown data sources"),
        (dict(num_images=8, batch_size=16), "num_images"),
        (dict(warmup=0), "warmup"),
        (dict(rounds=0), "rounds"),
        (dict(device="tpu"), "device"),
        (dict(dataset="/nonexistent/images"), "does not exist"),
    ],
)
def test_bad_input_is_refused_before_any_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench_train.run(**({"device": "cpu"} | kwargs))


def test_the_stream_row_reads_the_folder_files(one_thread, tmp_path):
    import torch
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(16):
            write_png(
                torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=gen),
                str(tmp_path / f"c{c}" / f"{i}.png"),
            )
    rows = bench_train.run(
        num_images=32,
        image_size=16,
        batch_size=16,
        steps=2,
        warmup=1,
        device="cpu",
        num_workers=0,
        dataset=str(tmp_path),
        sources=("memory", "stream"),
    )
    assert [row["row"] for row in rows[:2]] == [f"{bench_train.ROW_OURS}, memory", f"{bench_train.ROW_OURS}, stream"]
    assert all(math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0 for row in rows)
    with pytest.raises(ValueError, match="the stream source reads image files"):
        bench_train.run(
            num_images=32,
            image_size=16,
            batch_size=16,
            steps=2,
            warmup=1,
            device="cpu",
            num_workers=0,
            dataset="random",
            sources=("stream",),
        )
