"""``tcl-ssl sweep``: grid cells and their configurations, k1 relative to e^(1/t), selection on
validation only, the sensitivity table and heat-map values against the runs' own summaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.experiments.sweep import cell_config, check_axes, parse_axis, plan_sweep, select, slice_values, sweep
from tcl_ssl.experiments.tables import GroupResult, spread
from tcl_ssl.runs import read_record, read_summary


def _tiny(**overrides) -> PretrainConfig:
    base = dict(epochs=1, batch_size=32, limit_train_batches=2, knn_k=20, plots=False, knn_every=0)
    return PretrainConfig.build(**(base | overrides))


def test_k1_rel_is_k1_over_e_to_the_one_over_t():
    for t in (0.1, 0.2, 0.5):
        config = cell_config(_tiny(), {"k1_rel": 0.25, "temperature": t})
        assert config.method.options == {"temperature": t, "k1": pytest.approx(0.25 * math.exp(1 / t))}
    # the paper's k1 = 5000 at t = 0.1
    assert cell_config(_tiny(method_options={"temperature": 0.1}), {"k1_rel": 5000 / math.exp(10)}).method.options[
        "k1"
    ] == pytest.approx(5000)
    # without a temperature in the grid or the configuration: the method's own for the setting
    from tcl_ssl.methods.tcl import SELF_SUPERVISED_DEFAULTS

    t = SELF_SUPERVISED_DEFAULTS["temperature"]
    assert cell_config(_tiny(), {"k1_rel": 0.5}).method.options == {"k1": pytest.approx(0.5 * math.exp(1 / t))}
    moco_tcl = cell_config(_tiny(method="moco-tcl"), {"k1_rel": 0.5})  # moco-tcl's t = 0.2
    assert moco_tcl.method.options == {"k1": pytest.approx(0.5 * math.exp(5))}


def test_each_axis_reaches_its_place_in_the_configuration():
    config = cell_config(
        _tiny(method_options={"k2": 1.0}), {"batch_size": 64, "weak_view": True, "k1": 3.0, "epochs": 4}
    )
    assert (config.optim.batch_size, config.optim.epochs) == (64, 4)
    assert config.method.augmentation_options == {"weak_view": True}
    assert config.method.options == {"k2": 1.0, "k1": 3.0}


@pytest.mark.parametrize(
    "axes, match",
    [
        ({"k1": [1.0], "k1_rel": [0.1]}, "k1 or k1_rel"),
        ({"queue": [1]}, "cannot sweep 'queue' for method 'tcl'"),
        ({"k1_rel": [-1.0]}, "k1_rel values must be numbers >= 0"),
        ({}, "the grid is empty"),
    ],
)
def test_bad_axes_are_refused(axes, match):
    with pytest.raises(ValueError, match=match):
        check_axes(axes, _tiny())


def test_an_axis_the_method_does_not_have_is_refused_by_name():
    with pytest.raises(ValueError, match="cannot sweep 'k1' for method 'simclr'"):
        check_axes({"k1": [1.0]}, _tiny(method="simclr"))


def test_parse_axis():
    assert parse_axis("k1=0,10,30.5") == ("k1", [0, 10, 30.5])
    assert parse_axis("weak-view=true,false") == ("weak_view", [True, False])
    assert parse_axis("optimizer=sgd,lars") == ("optimizer", ["sgd", "lars"])
    for bad in ("k1", "k1=", "=1,2"):
        with pytest.raises(ValueError, match="--grid must be NAME=V1,V2"):
            parse_axis(bad)
    with pytest.raises(ValueError, match="names a value twice"):
        parse_axis("k1=1,1")


def _result(group, val, test):
    result = GroupResult(group, {})
    result.stats = {"val_knn_top1": spread(val), "val_linear_top1": spread([None]), "test_knn_top1": spread(test)}
    return result


def test_selection_uses_the_validation_mean_and_never_the_test_split():
    results = [_result("a", [50.0, 52.0], [70.0, 70.0]), _result("b", [53.0, 52.0], [40.0, 41.0])]
    assert select(results, "val_knn_top1").group == "b"
    with pytest.raises(ValueError, match="select on a validation figure"):
        select(results, "test_knn_top1")
    with pytest.raises(ValueError, match="no run reported val_linear_top1"):
        select(results, "val_linear_top1")


def test_a_slice_through_three_axes_keeps_the_others_at_the_selected_cell():
    axes = {"k1": [0, 10], "temperature": [0.1, 0.2], "lr": [0.03, 0.06, 0.12]}
    results = []
    for k1 in axes["k1"]:
        for t in axes["temperature"]:
            for lr in axes["lr"]:
                results.append(_result(f"k1={k1} temperature={t} lr={lr}", [k1 + 100 * t + 1000 * lr], [0.0]))
    best = {"k1": 10, "temperature": 0.2, "lr": 0.03}
    np.testing.assert_allclose(
        slice_values(results, best, axes, "k1", "lr", "val_knn_top1"),
        [[k1 + 20 + 1000 * lr for lr in axes["lr"]] for k1 in axes["k1"]],
    )
    np.testing.assert_allclose(
        slice_values(results, best, axes, "temperature", "lr", "val_knn_top1"),
        [[10 + 100 * t + 1000 * lr for lr in axes["lr"]] for t in axes["temperature"]],
    )


def test_plan_runs_every_cell_with_every_seed(tmp_path):
    cells, runs = plan_sweep(_tiny(), {"k1": [0, 10], "temperature": [0.1, 0.2, 0.5]}, [0, 1], tmp_path)
    assert len(cells) == 6 and len(runs) == 12
    assert cells[1] == {"k1": 0, "temperature": 0.2}
    assert runs[7].config.method.options == {"k1": 0, "temperature": 0.2} and runs[7].seed == 1
    assert runs[7].run_dir == tmp_path / "runs" / "k1_0_temperature_0.2-seed1"


def test_sweep_end_to_end_selects_on_validation_and_maps_the_runs_own_figures(tmp_path, small_digits):
    axes = {"k1": [0.0, 50.0], "temperature": [0.1, 0.5]}
    best, results = sweep(_tiny(), axes, [0], tmp_path, data=small_digits, command="tcl-ssl sweep ...")
    summaries = {}
    for k1 in axes["k1"]:
        for t in axes["temperature"]:
            run_dir = tmp_path / "runs" / f"k1_{k1}_temperature_{t}-seed0"
            summaries[k1, t] = read_summary(run_dir)
            assert read_record(run_dir).config.method.options == {"k1": k1, "temperature": t}
    val = {key: s.val["knn_top1"] for key, s in summaries.items()}
    chosen = max(val, key=val.get)
    assert best.stats["val_knn_top1"]["mean"] == pytest.approx(val[chosen])
    assert best.group == f"k1={chosen[0]} temperature={chosen[1]}"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["selected"] == {"k1": chosen[0], "temperature": chosen[1]} and saved["selected_on"] == "val_knn_top1"
    grid = slice_values(results, saved["selected"], axes, "k1", "temperature", "val_knn_top1")
    expected = np.array([[val[k1, t] for t in axes["temperature"]] for k1 in axes["k1"]])
    np.testing.assert_allclose(grid, expected)
    table = (tmp_path / "results.md").read_text()
    assert f"**{best.group}** ★" in table
    along_t = [val[chosen[0], t] for t in axes["temperature"]]
    assert (
        f"| temperature | 0.1: {along_t[0]:.2f}; 0.5: {along_t[1]:.2f} | {max(along_t) - min(along_t):.2f} |" in table
    )
    assert (tmp_path / "plots" / "heatmap-k1-temperature.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_sweep_refuses_bad_grids_before_running(tmp_path, capsys):
    assert main(["sweep", "--method", "simclr", "--grid", "k1=1,2", "--out", str(tmp_path)]) == 2
    assert "cannot sweep 'k1' for method 'simclr'" in capsys.readouterr().err
    assert main(["sweep", "--grid", "k1=1,2", "--grid", "k1=3", "--out", str(tmp_path)]) == 2
    assert "--grid names the axis 'k1' twice" in capsys.readouterr().err
    assert main(["sweep", "--grid", "k1=1,2", "--seeds", "a", "--out", str(tmp_path)]) == 2
    assert "'a' is not a valid int" in capsys.readouterr().err
