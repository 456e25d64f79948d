"""Two CPU processes (gloo) against one: training and evaluation under DDP compute what one process computes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

SCRIPT = Path(__file__).with_name("ddp_script.py")
REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _run([str(SCRIPT), "--devices", "1", "--batch-size", "16", "--out", str(tmp / "one.pt")], tmp)
    _run([str(SCRIPT), "--devices", "2", "--batch-size", "8", "--out", str(tmp / "two.pt")], tmp)
    return [torch.load(tmp / name, weights_only=False) for name in ("one.pt", "two.pt")]


def test_two_processes_follow_the_one_process_loss_trajectory(runs):
    one, two = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["losses"]) == len(two["losses"]) == 12  # 2 epochs of 96 images in global batches of 16
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)
    # the loss moved: the comparison is not between two untrained models
    assert abs(one["losses"][-1] - one["losses"][0]) > 1e-3


def test_two_processes_end_with_the_one_process_weights(runs):
    one, two = runs
    assert one["state_dict"].keys() == two["state_dict"].keys()
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the weights moved by far more than the tolerance: the runs are not compared untrained
    moved = max((value - one["initial"][key]).abs().max().item() for key, value in one["state_dict"].items())
    assert moved > 1e-2


def test_features_embedded_in_shards_are_gathered_in_order(runs):
    one, two = runs
    assert one["features"].shape == two["features"].shape == (96, 16)
    torch.testing.assert_close(two["features"], one["features"], rtol=1e-5, atol=1e-5)


def test_pretrain_under_ddp_evaluates_on_all_processes(tmp_path):
    """A 2-process ``tcl-ssl pretrain`` evaluates with every process embedding a shard: the
    random-init backbone's figures (same weights in both runs) equal those of one process."""
    gen = torch.Generator().manual_seed(0)
    for c in range(4):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(30):
            image = torch.randint(0, 128, (3, 12, 12), dtype=torch.uint8, generator=gen) + 32 * c
            write_png(image, str(tmp_path / "images" / f"c{c}" / f"{i}.png"))
    common = [
        "-m",
        "tcl_ssl.cli",
        "pretrain",
        "--dataset",
        str(tmp_path / "images"),
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--accelerator",
        "cpu",
        "--no-plots",
        "--knn-k",
        "5",
        "--protocols",
        "knn,linear",
        "--limit-train-batches",
        "2",
    ]
    env_cache = {"TCL_SSL_CACHE": str(tmp_path / "cache")}
    for name, extra in (("one", ["--devices", "1"]), ("two", ["--devices", "2", "--strategy", "ddp"])):
        result = subprocess.run(
            [sys.executable, *common, *extra, "--out", str(tmp_path / name)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **env_cache},
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert two["random_init"] == one["random_init"]
    assert set(two["test"]) == set(one["test"]) >= {"knn_top1", "linear_top1"}
    metrics = (tmp_path / "two" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val_knn_top1" in metrics.splitlines()[0]


def write_two_class_images(images: Path) -> None:
    """An image folder of 2 classes x 8 random 12 px PNGs under ``images``."""
    gen = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(8):
            write_png(
                torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=gen), str(images / c / f"{i}.png")
            )


def _ddp_pretrain(tmp_path: Path, devices: int, name: str, extra_path: Path | None = None, extra=()):
    """The README's ``tcl-ssl pretrain --accelerator cpu --devices N --strategy ddp`` (the console
    script, as a user runs it) on 2 x 8 generated 12 px images: one training step."""
    images = tmp_path / "images"
    if not images.exists():
        write_two_class_images(images)
    script = Path(sys.executable).with_name("tcl-ssl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "tcl_ssl.cli"]
    paths = [str(p) for p in (extra_path, REPO) if p is not None] + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "TCL_SSL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(paths)}
    argv = ["pretrain", "--accelerator", "cpu", "--devices", str(devices), "--strategy", "ddp"]
    argv += ["--dataset", str(images), "--image-size", "12", "--epochs", "1", "--batch-size", "4"]
    argv += ["--limit-train-batches", "1", "--knn-every", "0", "--no-plots", "--protocols", "knn", "--knn-k", "3"]
    return subprocess.run(
        [*command, *argv, *extra, "--out", str(tmp_path / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.ddp
@pytest.mark.parametrize("devices", [2, 3])
def test_every_rank_of_the_readme_ddp_command_finishes_and_only_rank_0_prints(tmp_path, devices):
    """Issue 19: ranks > 0 died in the summary printing (KeyError 'supervised') while the command exited 0."""
    result = _ddp_pretrain(tmp_path, devices, "run")
    assert result.returncode == 0, result.stderr[-3000:]  # the launcher waits for every rank and checks it
    assert "Traceback" not in result.stderr and "tcl-ssl: error" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.count("run directory:") == 1 and result.stdout.count("knn_top1") == 1, result.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["method"] == "tcl"


@pytest.mark.ddp
def test_a_rank_that_fails_after_rank_0_is_done_fails_the_command_by_name(tmp_path):
    """Rank 1 ends with exit code 3 after its work (a ``sitecustomize`` that the test puts on its path)."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import atexit, os\nif os.environ.get('LOCAL_RANK') == '1':\n    atexit.register(lambda: os._exit(3))\n"
    )
    result = _ddp_pretrain(tmp_path, 2, "run", extra_path=inject)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"tcl-ssl: error: the process of rank 1 \(pid \d+\) failed with exit code 3", result.stderr)


@pytest.mark.ddp
def test_a_ddp_resume_into_a_new_out_is_checked_by_process_0_alone(tmp_path):
    """The other processes rerun ``--resume RUN --out BRANCH`` when process 0 has begun writing
    BRANCH: they must not refuse it as a directory that holds a run."""
    assert _ddp_pretrain(tmp_path, 2, "run").returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    result = _ddp_pretrain(tmp_path, 2, "branch", extra=["--resume", str(tmp_path / "run"), "--epochs", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stdout.count("run directory:") == 1
    assert json.loads((tmp_path / "branch" / "summary.json").read_text())["epochs"] == 2
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
