"""scripts/gpu_check.sh's plumbing, on the CPU: a ``--cpu`` dry run (every step, tiny sizes) must
record every step with its exit status and time, and its report must hold parsed figures; the
GPU tests it selects must all carry the ``cuda`` marker."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tcl_ssl.bench import gpu_report
from tcl_ssl.bench import loss as bench_loss
from tcl_ssl.bench import train as bench_train
from tcl_ssl.safe_io import write_json

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _missing_interfaces() -> dict[str, str]:
    """Steps whose benchmark lacks a flag the script passes, with what is missing. The script is
    written for the final interfaces of ``bench loss`` and ``bench train`` (``--json``,
    ``tcl-tiled``, ``--precision``); until a checkout has them those steps fail with argparse's
    exit code 2, and this test checks that instead of their figures."""
    missing = {}
    loss_help = bench_loss.build_parser().format_help()
    lacks = [flag for flag in ("--json",) if flag not in loss_help] + (
        [] if "tcl-tiled" in bench_loss.LOSSES else ["the tcl-tiled loss"]
    )
    if lacks:
        missing["bench-loss"] = ", ".join(lacks)
    train_help = subprocess.run(
        [sys.executable, "-m", "tcl_ssl.bench.train", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    lacks = [flag for flag in ("--precision", "--json") if flag not in train_help]
    if lacks:
        missing["bench-train-32"] = missing["bench-train-224"] = ", ".join(lacks)
    return missing


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "check"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    done = subprocess.run(["bash", str(SCRIPT), "--cpu", "--out", str(out)], capture_output=True, text=True, env=env)
    missing = _missing_interfaces()
    if missing:  # visible in the summary until the interfaces land, when the tolerance goes
        warnings.warn(f"the GPU check's steps run against interfaces this checkout lacks: {missing}", stacklevel=1)
    return done, out, missing


def test_the_dry_run_records_every_step_with_its_exit_status(dry_run):
    done, out, missing = dry_run
    report = json.loads((out / "report.json").read_text())
    assert [step["name"] for step in report["steps"]] == list(gpu_report.STEPS), done.stdout
    for step in report["steps"]:
        log = (out / "steps" / step["name"] / "output.log").read_text()
        assert 0 < step["seconds"] <= step["timeout_s"] + 5, step
        assert step["command"] and step["name"] in done.stdout
        if step["name"] in missing:  # not yet in this checkout: refused by argparse, recorded, and the check goes on
            assert step["exit_code"] == 2 and "unrecognized arguments" in log, (step, missing)
        else:
            assert step["exit_code"] == 0, (step["name"], log[-3000:])
    assert report["failed"] == [name for name in gpu_report.STEPS if name in missing]
    assert done.returncode == (1 if missing else 0), done.stderr
    markdown = (out / "report.md").read_text()
    for step in report["steps"]:
        assert f"| {step['name']} | {step['exit_code']} |" in markdown
    assert report["check"]["mode"] == "cpu" and report["problems"] == []


def test_the_dry_run_report_holds_the_figures(dry_run):
    _, out, missing = dry_run
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["gpu"] is None

    tests = report["tests"]  # every CUDA test is selected, and skipped on the CPU
    assert tests["tests"] >= 6 and tests["skipped"] == tests["tests"] and tests["failed"] == tests["error"] == 0
    assert any("test_cuda.py" in case["name"] or "test_cuda" in case["name"] for case in tests["cases"])

    augment = report["augment"]
    assert {row["image_size"] for row in augment} == {32, 224}
    assert all(row["images_per_s"] > 0 and row["vs_lightly"] > 0 for row in augment)

    pretrain = report["pretrain"]
    assert pretrain["epochs"] == 1 and pretrain["splits"] == {"train": 180, "val": 20, "test": 100}
    assert pretrain["images_per_second"] > 0 and 0 < pretrain["train_seconds"] < pretrain["wall_seconds"]
    assert pretrain["vs_anchor"] == pytest.approx(pretrain["images_per_second"] / gpu_report.ANCHOR_IMAGES_PER_S)
    assert 0 <= pretrain["test_knn_top1"] <= 100

    if "bench-loss" not in missing:
        loss = report["loss"]
        assert {(row["size"], row["loss"]) for row in loss} >= {
            (n, name) for n in (64, 128) for name in ("tcl", "tcl-tiled", "supcon", "floor")
        }
        assert all(row["ms"] > 0 and row["peak_mib"] >= 0 for row in loss)
        assert all(row["vs_floor"] == pytest.approx(1.0) for row in loss if row["loss"] == "floor")
    if "bench-train-32" not in missing:
        train = report["train"]
        assert {row["image_size"] for row in train} == {32, 224}
        assert all(row["images_per_s"] > 0 and row["precision"] == "32-true" for row in train)
        assert all(row["vs_anchor"] == pytest.approx(row["images_per_s"] / 4200) for row in train)
    markdown = (out / "report.md").read_text()
    assert "## Augmentation" in markdown and "## Pretraining run" in markdown and "4,200 images/s" in markdown


def test_the_report_reads_the_rows_the_benchmarks_return(dry_run, tmp_path, one_thread):
    """The loss and train tables from rows of the benchmarks' ``run()`` as this checkout has it
    (what their ``--json`` writes), while the dry run cannot pass them ``--json`` yet."""
    _, out, missing = dry_run
    if not missing:
        pytest.skip("the dry run wrote and read the benchmarks' own --json rows")
    check = tmp_path / "check"
    (check / "steps").mkdir(parents=True)
    for name in ("bench-loss", "bench-train-32"):
        (check / "steps" / name).mkdir()
        (check / "steps" / name / "status.json").write_text((out / "steps" / name / "status.json").read_text())
    loss_rows = bench_loss.run([64], 16, 4, "cpu", 1, ["tcl", "supcon", "floor"], {})
    write_json(check / "steps" / "bench-loss" / "result.json", loss_rows)
    train_rows = bench_train.run(4, 32, 2, 1, 1, "cpu", 0, "random", ["memory"])
    write_json(check / "steps" / "bench-train-32" / "result.json", {"rows": train_rows})

    report = gpu_report.build_report(check)
    assert report["problems"] == []
    assert [(row["size"], row["loss"]) for row in report["loss"]] == [(64, "tcl"), (64, "supcon"), (64, "floor")]
    floor_ms = report["loss"][2]["ms"]
    assert all(
        row["vs_floor"] == pytest.approx(row["ms"] / floor_ms) and row["peak_mib"] >= 0 for row in report["loss"]
    )
    assert [row["row"] for row in report["train"]] == [row["row"] for row in train_rows]
    assert all(row["images_per_s"] > 0 and row["stem"] == "imagenet" for row in report["train"])
    assert "| 64 | TCLLoss |" in gpu_report.format_markdown(report)


def test_without_a_gpu_the_check_stops_at_once_and_says_why(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr and "--cpu" in done.stderr
    assert not (tmp_path / "steps").exists()
    done = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "unknown argument '--gpu'" in done.stderr


def test_every_test_that_needs_cuda_is_marked_cuda():
    """``pytest -m cuda`` selects what the GPU check runs: each test skipped without CUDA must carry
    the marker (on itself or its module's ``pytestmark``)."""
    unmarked = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
            and "mark.cuda" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            needs_cuda = any("not torch.cuda.is_available()" in d for d in decorators)
            if needs_cuda and not module_marked and "pytest.mark.cuda" not in decorators:
                unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, unmarked
