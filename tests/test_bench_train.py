"""`tcl-ssl bench train` on a tiny run: every row is measured, the ratios are the throughputs'
ratios, the table formats. A smoke test of the benchmark's plumbing, not a timing."""

from __future__ import annotations

import json
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
    assert table[0] == "| row | precision | images/s | x (b) | x (c) | startup s | peak memory MiB |"
    assert len(table) == 2 + len(rows)
    for line, row in zip(table[2:], rows):
        assert line.startswith(f"| {row['row']}: ") and f"| {row['vs_lightly']:.2f} | {row['vs_floor']:.2f} |" in line
        assert f"| {row['precision']} |" in line


def test_main_prints_the_table_and_writes_the_json(rows, monkeypatch, capsys, tmp_path):
    given = {}

    def fake_run(*args, **kwargs):
        given.update(kwargs)
        return rows

    monkeypatch.setattr(bench_train, "run", fake_run)
    path = tmp_path / "rows.json"
    argv = ["--device", "cpu", "--precision", "32-true", "bf16-mixed", "--compile", "--json", str(path)]
    assert bench_train.main(argv) == 0
    out = capsys.readouterr().out
    assert bench_train.format_table(rows) in out and "x the floor (c)" in out
    assert given["precisions"] == ["32-true", "bf16-mixed"] and given["compile"] is True
    assert json.loads(path.read_text()) == rows


def test_default_precision_is_pretrains(rows):
    expected = bench_train.default_precision("cpu")
    assert {row["precision"] for row in rows} == {expected}
    assert not any(row["compiled"] for row in rows)


def test_each_precision_has_its_own_rows_and_ratios(monkeypatch):
    # the rates are stood in for by distinct numbers per row, precision and compile (the rows'
    # measuring is exercised by the fixture above): the ratios of a row are over (b) and (c) in
    # its own precision, and over (c) compiled for a compiled row
    speed = {"32-true": 100.0, "bf16-mixed": 170.0}

    def fake(base):
        def rate(data, *args):
            settings = next(a for a in args if isinstance(a, bench_train.Settings))
            compiled = 1.3 if settings.compile else 1.0
            return bench_train.Measurement(base * speed[settings.precision] * compiled, 0, 5.0 * compiled)

        return rate

    monkeypatch.setattr(bench_train, "rate_ours", fake(1.0))
    monkeypatch.setattr(bench_train, "rate_lightly", fake(0.5))
    monkeypatch.setattr(bench_train, "rate_floor", fake(1.1))
    rows = bench_train.run(
        num_images=16,
        image_size=8,
        batch_size=8,
        device="cpu",
        num_workers=0,
        dataset="random",
        precisions=("32-true", "bf16-mixed"),
        compile=True,
    )
    keys = [(row["row"], row["precision"]) for row in rows]
    ours, lightly, floor = f"{bench_train.ROW_OURS}, memory", bench_train.ROW_LIGHTLY, bench_train.ROW_FLOOR
    expected = [(ours, "32-true"), (lightly, "32-true"), (floor, "32-true"), (f"{ours}, compiled", "32-true")]
    expected += [(f"{floor}, compiled", "32-true")]
    assert keys == expected + [(name, "bf16-mixed") for name, _ in expected]
    for row in rows:
        base = 1.0 if row["row"].startswith("(a)") else 0.5 if row["row"] == lightly else 1.1
        compiled = 1.3 if row["compiled"] else 1.0
        assert row["compiled"] == row["row"].endswith("compiled")
        assert row["images_per_s"] == pytest.approx(base * speed[row["precision"]] * compiled)
        assert row["vs_lightly"] == pytest.approx(base * compiled / 0.5)  # (b) of its precision, not compiled
        assert row["vs_floor"] == pytest.approx(base / 1.1)  # (c) of its precision, compiled as the row
        assert row["startup_s"] == pytest.approx(5.0 * compiled)
    lines = bench_train.ratio_lines(rows)
    assert lines[0] == f"{ours} [32-true]: 2.00x lightly's pipeline (b), 0.91x the floor (c)"
    assert lines[-1].startswith(f"bf16-mixed over 32-true: {ours} 1.70x, {lightly} 1.70x")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=("nowhere",)), "unknown data sources"),
        (dict(num_images=8, batch_size=16), "num_images"),
        (dict(warmup=0), "warmup"),
        (dict(rounds=0), "rounds"),
        (dict(device="tpu"), "device"),
        (dict(precisions=("32-true", "fp8")), "precisions must be distinct names among 32-true"),
        (dict(precisions=()), "precisions"),
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
