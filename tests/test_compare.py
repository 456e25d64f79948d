"""``tcl-ssl compare``: equal budgets, the results files against the runs' own summaries, reuse and
resume of an interrupted comparison, the progress line, and the command line."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

import tcl_ssl.experiments.runner as runner_module
from tcl_ssl.cli import main
from tcl_ssl.config import RUN_DIR_ENV, PretrainConfig
from tcl_ssl.experiments.compare import check_budget, compare, plan_comparison
from tcl_ssl.experiments.runner import execute_runs, run_state
from tcl_ssl.monitoring import ThroughputMeter
from tcl_ssl.runs import DatasetInfo, RunRecord, RunSummary, read_record, read_summary


class Interrupted(Exception):
    """Stands for a crash or a killed process in the middle of a run."""


def _tiny(**overrides) -> PretrainConfig:
    base = dict(epochs=2, batch_size=32, limit_train_batches=2, knn_k=20, plots=False, checkpoint_every_n_steps=1)
    return PretrainConfig.build(**(base | overrides))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_digits):
    """tcl and simclr x seeds 0, 1 on the small digits; the run with tcl, seed 1 interrupted at its
    third step by an error, then the comparison rerun: (out, results, progress events of the rerun)."""
    out = tmp_path_factory.mktemp("compare")
    configs = {"tcl": _tiny(method="tcl"), "simclr": _tiny(method="simclr")}
    original = ThroughputMeter.on_train_batch_end

    def interrupt(self, trainer, module, outputs, batch, batch_idx):
        original(self, trainer, module, outputs, batch, batch_idx)
        if trainer.global_step == 3 and os.environ[RUN_DIR_ENV].endswith("tcl-seed1"):
            raise Interrupted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ThroughputMeter, "on_train_batch_end", interrupt)
        with pytest.raises(Interrupted):
            compare(configs, [0, 1], out, data=small_digits)
    assert not (out / "runs" / "tcl-seed1" / "summary.json").is_file()
    assert (out / "runs" / "tcl-seed1" / "checkpoints" / "last.ckpt").is_file()
    events = []
    results = compare(configs, [0, 1], out, data=small_digits, progress=events.append, command="tcl-ssl compare ...")
    return out, results, events


def test_a_rerun_reuses_finished_runs_and_resumes_the_interrupted_one(finished):
    out, _, events = finished
    assert [(e.run.group, e.run.seed, e.state) for e in events] == [
        ("tcl", 0, "reused"),
        ("simclr", 0, "reused"),
        ("tcl", 1, "running"),
        ("tcl", 1, "finished"),
        ("simclr", 1, "running"),
        ("simclr", 1, "finished"),
    ]
    (resume,) = read_record(out / "runs" / "tcl-seed1").resumes
    assert resume["checkpoint"].endswith("tcl-seed1/checkpoints/last.ckpt") and resume["changed"] == {}
    # the progress line's estimate: the mean time of the runs this call finished x the runs left
    finished_tcl = next(e for e in events if e.state == "finished")
    starting_simclr = next(e for e in events if e.state == "running" and e.run.group == "simclr")
    assert starting_simclr.seconds_left == pytest.approx(finished_tcl.seconds * 1)
    assert events[2].seconds_left is None  # nothing run yet by this call


def test_results_files_hold_each_runs_own_figures_and_their_mean_and_sample_std(finished):
    out, results, _ = finished
    summaries = {(m, s): read_summary(out / "runs" / f"{m}-seed{s}") for m in ("tcl", "simclr") for s in (0, 1)}
    saved = json.loads((out / "results.json").read_text())
    assert saved["kind"] == "compare" and saved["seeds"] == [0, 1] and saved["budget"]["epochs"] == 2
    rows = {row["group"]: row for row in csv.DictReader(open(out / "results.csv"))}
    for group in saved["groups"]:
        method = group["group"]
        knn = np.array([summaries[method, s].test["knn_top1"] for s in (0, 1)])
        linear5 = np.array([summaries[method, s].test["linear_top5"] for s in (0, 1)])
        assert [r["figures"]["test_knn_top1"] for r in group["runs"]] == list(knn)
        assert group["stats"]["test_knn_top1"]["mean"] == pytest.approx(knn.mean())
        assert group["stats"]["test_knn_top1"]["std"] == pytest.approx(knn.std(ddof=1))
        assert group["stats"]["test_linear_top5"]["mean"] == pytest.approx(linear5.mean())
        assert float(rows[method]["test_knn_top1_mean"]) == pytest.approx(knn.mean(), abs=1e-4)
        assert float(rows[method]["test_knn_top1_std"]) == pytest.approx(knn.std(ddof=1), abs=1e-4)
        # per-run resources: images/s over the steps taken, peak memory of this process
        for run in group["runs"]:
            assert run["figures"]["images_per_second"] > 0 and run["figures"]["peak_rss_mib"] > 100
        assert len(group["curves"]["val_knn_top1"]) == 2 and [e for e, _ in group["curves"]["val_knn_top1"][0]] == [
            0,
            1,
        ]
    assert [g["group"] for g in saved["groups"]] == ["tcl", "simclr"]
    table = (out / "results.md").read_text()
    tcl = next(g for g in saved["groups"] if g["group"] == "tcl")["stats"]["test_knn_top1"]
    assert f"| tcl | 0,1 | {tcl['mean']:.2f} ± {tcl['std']:.2f} |" in table
    assert "Command: `tcl-ssl compare ...`" in table and "- epochs: `2`" in table
    for picture in ("curves.png", "bars.png"):
        assert (out / "plots" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_directory_of_another_configuration_is_refused(finished):
    out, _, _ = finished
    configs = {"tcl": _tiny(method="tcl", epochs=3)}
    (run,) = plan_comparison(configs, [0], out)
    with pytest.raises(ValueError, match=r"holds a run of another configuration \(epochs: 2 there, 3 planned\)"):
        run_state(run)
    with pytest.raises(ValueError, match="another configuration"):
        compare(configs, [0], out)


def test_reuse_is_refused_when_a_data_field_was_given_then_and_not_now(finished):
    out, _, _ = finished
    held = read_record(out / "runs" / "tcl-seed0").config
    (run,) = plan_comparison({"tcl": _tiny(method="tcl", train_images=300)}, [0], out)
    with pytest.raises(ValueError, match=r"train_images: None there, 300 planned"):
        run_state(run)
    # precision, unset in the plan, was resolved when the run started: the run's stands
    assert held.data.train_images is None and held.trainer.precision == "32-true"
    assert run.config.trainer.precision is None


def test_the_time_left_counts_only_the_runs_still_to_run(tmp_path, monkeypatch):
    """Two runs done earlier, interleaved with two to run: after the first new run (d seconds),
    one run is left, so d seconds, not 3 d."""
    configs = {"tcl": _tiny(method="tcl"), "simclr": _tiny(method="simclr")}
    runs = plan_comparison(configs, [0, 1], tmp_path)
    dataset = DatasetInfo(train=8, val=2, test=2, classes=2, channels=1, image_size=28, mean=[0.5], std=[0.2])

    def fake_summary(config):
        return RunSummary(config.method.name, False, "mnist5k", 2, {}, {}, {}, str(config.run_dir()))

    for run in (runs[0], runs[2]):  # tcl seed 0 and tcl seed 1 finished before
        config = run.config.resolved().replace(precision="32-true", stem="imagenet")
        RunRecord(config, run.run_dir, dataset).write()
        fake_summary(config).write()

    monkeypatch.setattr(runner_module, "pretrain", lambda config, data=None: fake_summary(config))
    monkeypatch.setattr(runner_module, "load_run_data", lambda config: None)
    events = []
    execute_runs(runs, events.append)
    first_done = next(e for e in events if e.state == "finished")
    assert [(e.run.group, e.run.seed, e.state) for e in events] == [
        ("tcl", 0, "reused"),
        ("simclr", 0, "running"),
        ("simclr", 0, "finished"),
        ("tcl", 1, "reused"),
        ("simclr", 1, "running"),
        ("simclr", 1, "finished"),
    ]
    assert first_done.seconds_left == pytest.approx(first_done.seconds)  # simclr seed 1 alone is left
    assert events[3].seconds_left == pytest.approx(first_done.seconds)
    assert events[-1].seconds_left == 0


def test_throughput_counts_images_of_every_process_once():
    from types import SimpleNamespace

    import torch

    meter = ThroughputMeter()
    trainer = SimpleNamespace(world_size=2)
    views, labels = [torch.zeros(16, 3, 8, 8)] * 3, torch.zeros(16)  # three views of 16 images
    for step in range(4):
        meter.on_train_batch_start(trainer, None, (views, labels), step)
        meter.on_train_batch_end(trainer, None, None, (views, labels), step)
    assert meter.images == 4 * 16 * 2
    assert meter.images_per_second() == pytest.approx(meter.images / (meter.end - meter.start))
    assert ThroughputMeter().images_per_second() is None


def test_the_budget_must_be_equal_and_names_what_differs():
    with pytest.raises(ValueError, match=r"batch_size differs \(tcl: 32, simclr: 64\)"):
        check_budget({"tcl": _tiny(method="tcl"), "simclr": _tiny(method="simclr", batch_size=64)})
    budget = check_budget({"tcl": _tiny(method="tcl", lr=0.5), "simclr": _tiny(method="simclr")})
    assert budget["epochs"] == 2 and "lr" not in budget  # each method keeps its own recipe


def test_plan_runs_whole_seeds_first_and_keeps_run_directories_apart(tmp_path):
    runs = plan_comparison({"tcl": _tiny(method="tcl"), "moco-tcl": _tiny(method="moco-tcl")}, [3, 4], tmp_path)
    assert [(r.group, r.seed) for r in runs] == [("tcl", 3), ("moco-tcl", 3), ("tcl", 4), ("moco-tcl", 4)]
    assert runs[1].run_dir == tmp_path / "runs" / "moco-tcl-seed3" and runs[1].config.run.seed == 3
    with pytest.raises(ValueError, match="would share run directories"):
        plan_comparison({"a b": _tiny(), "a_b": _tiny()}, [0], tmp_path)


def test_a_bad_configuration_fails_before_any_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner_module, "pretrain", lambda *a, **k: calls.append(a))
    configs = {"tcl": _tiny(method="tcl"), "simclr": _tiny(method="simclr", method_options={"k1": 3.0})}
    with pytest.raises(ValueError, match="does not accept options k1"):
        compare(configs, [0], tmp_path)
    assert calls == []


def _method_configs(argv):
    from tcl_ssl.cli import build_parser
    from tcl_ssl.cli.pretraining import method_configs

    args = build_parser().parse_args(argv)
    return method_configs(args, args.methods.split(","))


def test_cli_options_reach_every_method_and_hyper_parameters_only_those_that_take_them(tmp_path):
    configs = _method_configs(
        [
            "compare",
            "--methods",
            "tcl,simclr,moco-tcl",
            "--epochs",
            "3",
            "--k1",
            "30",
            "--temperature",
            "0.2",
            "--train-images",
            "500",
        ]
    )
    assert {m: (c.optim.epochs, c.data.train_images, c.eval.plots) for m, c in configs.items()} == {
        m: (3, 500, False) for m in ("tcl", "simclr", "moco-tcl")
    }
    assert configs["tcl"].method.options == {"k1": 30.0, "temperature": 0.2}
    assert configs["moco-tcl"].method.options == {"k1": 30.0, "temperature": 0.2}
    assert configs["simclr"].method.options == {"temperature": 0.2}
    with pytest.raises(ValueError, match="no method of simclr, byol takes the option.s. k1"):
        _method_configs(["compare", "--methods", "simclr,byol", "--k1", "30"])


def test_cli_recipes_give_each_method_its_own_file(tmp_path):
    for method, lr in (("tcl", 0.5), ("simclr", 2.0)):
        (tmp_path / f"mine-{method}.yaml").write_text(f"method: {method}\nepochs: 4\nbatch_size: 64\nlr: {lr}\n")
    (tmp_path / "mine-byol.yaml").write_text("method: simclr\n")
    configs = _method_configs(
        ["compare", "--methods", "tcl,simclr", "--recipes", str(tmp_path / "mine"), "--epochs", "2"]
    )
    assert {m: (c.optim.lr, c.optim.epochs, c.optim.batch_size) for m, c in configs.items()} == {
        "tcl": (0.5, 2, 64),
        "simclr": (2.0, 2, 64),
    }
    assert configs["tcl"].run.recipe == str((tmp_path / "mine-tcl.yaml").resolve())
    with pytest.raises(ValueError, match="recipe .*mine-byol.* is for method 'simclr', not 'byol'"):
        _method_configs(["compare", "--methods", "byol", "--recipes", str(tmp_path / "mine")])
    with pytest.raises(ValueError, match="unknown recipe"):
        _method_configs(["compare", "--methods", "moco", "--recipes", str(tmp_path / "mine")])


def test_cli_recipe_family_names_the_default_methods_and_prefixes_may_be_relative(tmp_path, monkeypatch, capsys):
    import tcl_ssl.experiments.compare as compare_module

    asked = {}
    monkeypatch.setattr(compare_module, "compare", lambda configs, *a, **k: asked.update(configs))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "family").mkdir()
    for method in ("simclr", "tcl"):  # no family-moco.yaml, ...: the family has two methods
        (tmp_path / "family" / f"ssl-{method}.yaml").write_text(f"method: {method}\nepochs: 3\n")
    assert main(["compare", "--recipes", "family/ssl", "--seeds", "0"]) == 0
    assert list(asked) == ["tcl", "simclr"]  # the registry's order
    assert all(config.optim.epochs == 3 for config in asked.values())
    assert main(["compare", "--recipes", "family/none", "--seeds", "0"]) == 2
    assert "no recipe family/none-METHOD exists for a method of this setting; give --methods" in capsys.readouterr().err
    assert main(["compare", "--recipes", "family/ssl", "--methods", "tcl,moco", "--seeds", "0"]) == 2
    assert "unknown recipe 'family/ssl-moco'" in capsys.readouterr().err  # named explicitly: refused


def test_cli_compare_runs_and_prints_the_table_and_progress(tmp_path, image_folder, capsys):
    argv = [
        "compare",
        "--methods",
        "tcl",
        "--seeds",
        "0",
        "--dataset",
        str(tmp_path / "images"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--knn-k",
        "5",
        "--knn-every",
        "0",
        "--protocols",
        "knn",
        "--out",
        str(tmp_path / "cmp"),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "tcl-ssl: [1/1] tcl seed 0: running" in captured.err
        and "tcl-ssl: [1/1] tcl seed 0: finished in" in captured.err
    )
    assert "| tcl | 0 |" in captured.out and (tmp_path / "cmp" / "results.json").is_file()
    assert main(argv) == 0  # reused
    assert "tcl-ssl: [1/1] tcl seed 0: reused" in capsys.readouterr().err
    assert main(argv + ["--seeds", "0,0"]) == 2
    assert "--seeds names a value twice" in capsys.readouterr().err
    no_plots = argv[:-1] + [str(tmp_path / "cmp2"), "--no-plots"]
    assert main(no_plots) == 0 and not (tmp_path / "cmp2" / "plots").exists()
    assert (tmp_path / "cmp2" / "results.md").is_file()


def test_default_methods_are_the_registry_s_for_the_setting():
    from tcl_ssl.experiments.compare import default_methods
    from tcl_ssl.methods import available_methods, method_class

    ssl, sup = default_methods(supervised=False), default_methods(supervised=True)
    assert ssl == [name for name in available_methods() if method_class(name).without_labels]
    assert all(method_class(name).with_labels for name in sup) and {"tcl", "supcon", "ce"} <= set(sup)
    assert "moco-tcl" in ssl and "moco-tcl" not in sup  # it trains with labels, but is compared without


def test_runs_that_read_the_same_images_load_them_once(tmp_path, monkeypatch):
    """A train_images grid reads one folder: loaded once (pretrain takes each subset itself); a
    run on other images loads its own."""
    runs = plan_comparison(
        {
            "500": _tiny(train_images=500),
            "600": _tiny(train_images=600),
            "small": _tiny(train_images=500, image_size=16),
        },
        [0],
        tmp_path,
    )
    loaded = []
    monkeypatch.setattr(runner_module, "load_run_data", lambda config: loaded.append(config.data.image_size))
    monkeypatch.setattr(
        runner_module,
        "pretrain",
        lambda config, data=None: RunSummary("tcl", False, "mnist5k", 2, {}, {}, {}, str(config.run_dir())),
    )
    execute_runs(runs)
    assert loaded == [None, 16]


def test_curves_of_fifteen_methods_get_fifteen_colours_and_one_legend(tmp_path, monkeypatch):
    import tcl_ssl.experiments.plots as plots
    from tcl_ssl.experiments.tables import GroupResult

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, **options: drawn.append(fig))
    curve = {"val_knn_top1": [[(0, 30.0), (1, 35.0)], [(0, 31.0), (1, 36.0)]]}
    results = [GroupResult(group=f"method{i}", settings={}, curves=curve) for i in range(15)]
    plots.plot_curves(results, tmp_path / "curves.png", metrics=("val_knn_top1",))
    (fig,) = drawn
    colours = {tuple(line.get_color()) for line in fig.axes[0].lines}
    assert len(fig.axes[0].lines) == 15 and len(colours) == 15
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == [r.group for r in results]
