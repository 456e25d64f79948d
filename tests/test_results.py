"""``tcl-ssl summarize``: runs grouped by configuration, mean and sample std over seeds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.experiments.summarize import summarize
from tcl_ssl.runs import DatasetInfo, RunRecord, RunSummary, read_summary

DATASET = DatasetInfo(train=3600, val=400, test=1000, classes=10, channels=1, image_size=28, mean=[0.1], std=[0.3])


def _run(root, name, seed, knn, **options):
    run = root / name
    config = PretrainConfig.build(**({"lr": 0.06} | options), seed=seed, out=str(run))
    RunRecord(config, run, DATASET).write()
    RunSummary(
        method=config.method.name,
        supervised=False,
        dataset="mnist5k",
        epochs=config.optim.epochs,
        val={"knn_top1": knn - 1},
        test={"knn_top1": knn, "linear_top1": knn + 2},
        random_init={"val": {"knn_top1": 76.0}, "test": {"knn_top1": 77.5, "linear_top1": 90.0}},
        run_dir=str(run),
        train_seconds=100.0 + seed,
    ).write()
    return run


def test_runs_are_grouped_by_configuration_with_mean_and_sample_std(tmp_path):
    runs = [_run(tmp_path, f"a{s}", s, knn) for s, knn in enumerate([80.0, 82.5, 81.0])]
    runs += [_run(tmp_path, f"b{s}", s, knn, method_options={"k1": 100.0}) for s, knn in enumerate([70.0, 74.0])]
    first, second = summarize(runs)
    assert first["seeds"] == [0, 1, 2] and second["seeds"] == [0, 1]
    values = np.array([80.0, 82.5, 81.0])
    assert first["test_knn_top1"] == f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"
    assert first["val_knn_top1"] == f"{values.mean() - 1:.1f} ± {values.std(ddof=1):.1f}"
    assert first["random_init_val_knn_top1"] == "76.0 ± 0.0" and first["random_init_test_knn_top1"] == "77.5 ± 0.0"
    assert first["label"] == "tcl (self-supervised)" and second["label"] == "tcl (self-supervised), k1=100.0"


def test_cli_summarize_prints_a_table_and_refuses_unfinished_runs(tmp_path, capsys):
    run = _run(tmp_path, "a", 0, 80.0)
    assert main(["summarize", str(run)]) == 0
    assert (
        "| tcl (self-supervised) | 0 | 79.0 | - | 80.0 | 82.0 | 76.0 | - | 77.5 | 90.0 | 100.0 |"
        in capsys.readouterr().out
    )
    (tmp_path / "empty").mkdir()
    assert main(["summarize", str(tmp_path / "empty")]) == 2
    assert "is not a finished run" in capsys.readouterr().err


def test_labels_name_only_what_differs_within_a_method_and_runs_count_once(tmp_path):
    tcl = _run(tmp_path, "tcl", 0, 80.0)
    moco = _run(tmp_path, "moco", 0, 60.0, method="moco", lr=0.3)
    moco_lr = _run(tmp_path, "moco-lr", 0, 56.0, method="moco", lr=0.06)
    rows = summarize([tcl, moco, moco_lr, tmp_path / "tcl" / ".." / "tcl"])
    assert [r["label"] for r in rows] == [
        "tcl (self-supervised)",
        "moco (self-supervised), lr=0.3",
        "moco (self-supervised), lr=0.06",
    ]
    assert rows[0]["seeds"] == [0]


def test_a_run_resumed_to_more_epochs_is_not_averaged_with_shorter_ones(tmp_path):
    short = _run(tmp_path, "short", 0, 80.0, epochs=8)
    longer = _run(tmp_path, "longer", 1, 85.0, epochs=8)
    dataclasses.replace(read_summary(longer), epochs=20).write()
    rows = summarize([short, longer])
    assert [r["label"] for r in rows] == ["tcl (self-supervised), epochs=8", "tcl (self-supervised), epochs=20"]


def test_a_summary_with_entries_of_another_version_is_read(tmp_path):
    run = _run(tmp_path, "a", 0, 80.0)
    content = json.loads((run / "summary.json").read_text())
    content["online_probe"]["later_figure"] = 1.0
    content["peak_memory"]["later_figure"] = 2.0
    (run / "summary.json").write_text(json.dumps(content))
    assert read_summary(run).test["knn_top1"] == 80.0
