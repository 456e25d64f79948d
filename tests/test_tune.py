"""``tcl-ssl tune``: the steps of the coordinate search, its choices on validation against the runs'
own summaries, reuse of settings already run, and the recipe file it writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.config.recipes import load_recipe
from tcl_ssl.experiments.tune import _choose, search_steps, starting_point, tune
from tcl_ssl.processes import share_from_process_zero
from tcl_ssl.runs import read_record, read_summary
from tests.test_ddp import write_two_class_images


def _tiny(**overrides) -> PretrainConfig:
    base = dict(epochs=1, batch_size=32, limit_train_batches=2, knn_k=20, plots=False, knn_every=0)
    return PretrainConfig.build(**(base | overrides))


def test_steps_are_the_lr_then_each_knob_of_the_search_space_with_the_starting_value():
    steps = search_steps(_tiny(method="tcl"))
    assert steps == [
        ("lr", [0.03, 0.06, 0.12]),
        ("temperature", [0.1, 0.2, 0.5]),
        ("k1", [0.0, 10.0, 100.0]),
        ("k2", [1.0, 4.0]),
    ]
    # a recipe's own values are the starting point, added to a knob's values when not among them
    given = _tiny(method="moco", lr=0.15, method_options={"temperature": 0.3})
    assert starting_point(given) == {"lr": 0.15, "temperature": 0.3, "momentum_start": 0.99, "queue_size": 4096}
    assert search_steps(given, (1, 3))[:2] == [("lr", [0.15, 0.45]), ("temperature", [0.1, 0.2, 0.5, 0.3])]
    with pytest.raises(ValueError, match="lr factors must be numbers > 0"):
        search_steps(given, (0.5, 0))


def test_a_tie_keeps_the_value_the_setting_had():
    assert _choose([1, 2, 3], [40.0, 41.0, 41.0], current=3) == 3
    assert _choose([1, 2, 3], [40.0, 41.0, 41.0], current=1) == 2
    assert _choose([1, 2], [None, None], current=2) == 2


def test_tune_end_to_end_chooses_each_step_on_validation_and_writes_a_recipe(tmp_path, small_digits):
    base = _tiny(method="simclr")
    recipe = tmp_path / "tuned-simclr.yaml"
    chosen, steps = tune(base, tmp_path / "search", seeds=[0], lr_factors=(0.5, 1.0), recipe=recipe, data=small_digits)
    runs = sorted(p.name for p in (tmp_path / "search" / "runs").iterdir())
    assert len(runs) == 4  # 2 lrs + 3 temperatures, one of them the first step's choice (reused)

    def val(lr, t):
        name = f"lr_{lr}_temperature_{t}-seed0"
        assert read_record(tmp_path / "search" / "runs" / name).config.optim.lr == lr
        return read_summary(tmp_path / "search" / "runs" / name).val["knn_top1"]

    lrs = [0.5, 1.0]  # simclr's lr 1.0 at 0.5 and 1 times
    first = {lr: val(lr, 0.5) for lr in lrs}
    best_lr = max(lrs, key=lambda lr: (first[lr], lr == 1.0))
    assert steps[0].axis == "lr" and steps[0].chosen == best_lr
    assert list(steps[0].scores) == [pytest.approx(first[lr]) for lr in lrs]
    second = {t: val(best_lr, t) for t in (0.1, 0.2, 0.5)}
    best_t = max(second, key=lambda t: (second[t], t == 0.5))
    assert steps[1].axis == "temperature" and steps[1].chosen == best_t
    assert chosen == {"lr": best_lr, "temperature": best_t}

    saved = json.loads((tmp_path / "search" / "results.json").read_text())
    assert saved["kind"] == "tune" and saved["selected"] == chosen
    assert f"**lr={best_lr} temperature={best_t}** ★" in (tmp_path / "search" / "results.md").read_text()
    loaded = load_recipe(recipe).config(dataset=base.data.dataset)
    assert loaded.method.name == "simclr" and loaded.method.options == {"temperature": best_t}
    assert loaded.optim.lr == best_lr
    for key in ("epochs", "batch_size", "limit_train_batches", "knn_k", "knn_every"):
        assert loaded.get(key) == base.get(key), key


def test_cli_tune_refuses_bad_input_before_running(tmp_path, capsys):
    assert main(["tune", "--lr-factors", "0.5,x", "--out", str(tmp_path)]) == 2
    assert "'x' is not a valid float" in capsys.readouterr().err
    assert main(["tune", "--lr-factors", "0.5,-1", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "lr factors must be numbers > 0" in capsys.readouterr().err


def _share_worker(rank: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # process 0 has made a choice; the other has none (it has no run summaries)
        results[rank] = share_from_process_zero({"lr": 0.5, "k1": 10.0} if rank == 0 else None)
    finally:
        torch_dist.destroy_process_group()


def test_every_process_takes_process_zeros_choice():
    """Under DDP only process 0 reads the runs' summaries and chooses; the next step must run with
    its choice on every process (each process runs the whole search)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_share_worker, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: {"lr": 0.5, "k1": 10.0}, 1: {"lr": 0.5, "k1": 10.0}}
    assert share_from_process_zero(3) == 3  # one process: the value itself


@pytest.mark.ddp
def test_tune_under_two_processes_runs_each_setting_once_on_both_and_writes_one_result(tmp_path):
    """``tcl-ssl tune --devices 2 --strategy ddp`` finishes on both processes: the choice is
    broadcast over the process group Lightning left up after each step's runs (the test above
    shows that every process receives it), and only process 0 writes the results."""
    images = tmp_path / "images"
    write_two_class_images(images)
    argv = ["tune", "--method", "simclr", "--lr-factors", "0.5,2", "--accelerator", "cpu", "--devices", "2"]
    argv += ["--strategy", "ddp", "--dataset", str(images), "--image-size", "12", "--epochs", "1"]
    argv += ["--batch-size", "4", "--limit-train-batches", "1", "--knn-every", "0", "--no-plots", "--knn-k", "3"]
    argv += ["--out", str(tmp_path / "search")]
    env = {**os.environ, "TCL_SSL_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "tcl_ssl.cli", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    saved = json.loads((tmp_path / "search" / "results.json").read_text())
    assert [step["axis"] for step in saved["steps"]] == ["lr", "temperature"]
    lr = saved["selected"]["lr"]
    # 3 lrs (0.5, 2 and 1 times), then 3 temperatures at the chosen lr, one of them already run
    runs = sorted(p.name for p in (tmp_path / "search" / "runs").iterdir())
    assert len(runs) == 5, runs
    assert sum(name.startswith(f"lr_{lr}_") for name in runs) == 3, runs
