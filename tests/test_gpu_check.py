"""scripts/gpu_check.sh's plumbing, on the CPU: a ``--cpu`` dry run (every step, tiny sizes) must
record every step with its exit status and time, and its report must hold parsed figures; the
GPU tests it selects must all carry the ``cuda`` marker."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tcl_ssl.bench import gpu_report

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "check"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    done = subprocess.run(["bash", str(SCRIPT), "--cpu", "--out", str(out)], capture_output=True, text=True, env=env)
    return done, out


def test_the_dry_run_records_every_step_with_its_exit_status(dry_run):
    done, out = dry_run
    report = json.loads((out / "report.json").read_text())
    assert [step["name"] for step in report["steps"]] == list(gpu_report.STEPS), done.stdout
    for step in report["steps"]:
        log = (out / "steps" / step["name"] / "output.log").read_text()
        assert 0 < step["seconds"] <= step["timeout_s"] + 5, step
        assert step["command"] and step["name"] in done.stdout
        assert step["exit_code"] == 0, (step["name"], log[-3000:])
    assert report["failed"] == []
    assert done.returncode == 0, done.stderr
    markdown = (out / "report.md").read_text()
    for step in report["steps"]:
        assert f"| {step['name']} | {step['exit_code']} |" in markdown
    assert report["check"]["mode"] == "cpu" and report["problems"] == []


def test_the_dry_run_report_holds_the_figures(dry_run):
    _, out = dry_run
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

    loss = report["loss"]
    assert {(row["size"], row["loss"]) for row in loss} >= {
        (n, name) for n in (64, 128) for name in ("tcl", "tcl-tiled", "supcon", "floor")
    }
    assert all(row["ms"] > 0 and row["peak_mib"] >= 0 for row in loss)
    assert all(row["vs_floor"] == pytest.approx(1.0) for row in loss if row["loss"] == "floor")
    train = report["train"]
    assert {row["image_size"] for row in train} == {32, 224}
    assert all(row["images_per_s"] > 0 and row["precision"] == "32-true" for row in train)
    assert all(row["vs_anchor"] == pytest.approx(row["images_per_s"] / 4200) for row in train)
    markdown = (out / "report.md").read_text()
    assert "## Augmentation" in markdown and "## Pretraining run" in markdown and "4,200 images/s" in markdown


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
