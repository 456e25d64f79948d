"""The run configuration: one declaration per option, and everything derived from it (flags,
recipe and config.json reading, checks, the groups that resume, compare and sweep use)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tcl_ssl.cli import build_parser
from tcl_ssl.cli.options import apply_given, given_options, option_flags
from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.config.spec import spec_of
from tcl_ssl.runs import RunRecord, read_record, read_summary

RESULTS = Path(__file__).parent.parent / "docs" / "results" / "cpu-small"


def _given(*argv: str) -> dict:
    return given_options(build_parser().parse_args(["pretrain", *argv]))


def test_every_option_is_declared_once_with_help_and_a_unique_key_and_flag():
    keys = set()
    assert [f.name for f in dataclasses.fields(PretrainConfig)] == list(PretrainConfig.GROUPS)
    for group in PretrainConfig.GROUPS.values():
        for item in dataclasses.fields(group):
            spec = spec_of(item)  # raises unless declared with option()
            assert spec.help and spec.key not in keys
            keys.add(spec.key)
    assert list(PretrainConfig.options()) == list(PretrainConfig().flat()) and len(keys) == len(
        PretrainConfig.options()
    )
    build_parser()  # argparse refuses two options with one flag ("conflicting option string")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "3", "--batch-size", "64"], {"epochs": 3, "batch_size": 64}),
        (["--epoch", "2"], {"epochs": 2}),  # argparse's unambiguous prefixes keep working
        (
            ["--method", "moco", "-o", "queue_size=8192", "-o", "m=x"],
            {"method": "moco", "method_options": {"queue_size": 8192, "m": "x"}},
        ),
        (["--k1", "3", "--temperature", "0.2", "-o", "k1=5"], {"method_options": {"k1": 5, "temperature": 0.2}}),
        (["--min-scale", "0.3"], {"augmentation_options": {"min_scale": 0.3}}),
        (["--supervised", "--no-plots"], {"supervised": True, "plots": False}),
        (["--knn-every", "0", "--protocols", "knn,linear-aug"], {"knn_every": 0, "protocols": ["knn", "linear-aug"]}),
        (["--devices", "2", "--precision", "bf16-mixed"], {"devices": 2, "precision": "bf16-mixed"}),
        (["--devices", "auto", "--limit-train-batches", "3"], {"devices": "auto", "limit_train_batches": 3}),
        (["--metrics-every-n-steps", "1"], {"metrics_every_n_steps": 1}),
        (["--resume", "runs/a", "--out", "runs/b", "--seed", "4"], {"resume": "runs/a", "out": "runs/b", "seed": 4}),
        ([], {}),
    ],
)
def test_the_flags_of_every_documented_spelling_give_exactly_the_options_given(argv, expected):
    assert _given(*argv) == expected


def test_given_options_change_a_base_configuration_and_merge_its_mappings():
    base = PretrainConfig.build(epochs=100, method_options={"temperature": 0.1, "k1": 5000.0})
    changed = apply_given(base, _given("--k1", "10", "--batch-size", "64"))
    assert changed.optim.epochs == 100 and changed.optim.batch_size == 64
    assert changed.method.options == {"temperature": 0.1, "k1": 10.0}


@pytest.mark.parametrize(
    "content, message",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"supervised": "no"}, "supervised must be true or false, got 'no'"),
        ({"optim": {"optimizer": "adam"}}, "optimizer must be one of 'sgd', 'lars' or null, got 'adam'"),
        ({"lr": -1.0}, "lr must be a number > 0, got -1.0"),
        ({"protocols": "knn"}, "protocols must be a list of texts, got 'knn'"),
        ({"method_options": [1]}, "method_options must be a mapping of names to values, got [1]"),
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"optim": {"bogus": 1}}, "group 'optim' has no option 'bogus'; allowed: epochs, batch_size"),
    ],
)
def test_values_are_checked_against_their_declaration_naming_value_and_what_is_allowed(content, message):
    with pytest.raises(ConfigError, match="^somewhere: " + message.replace("(", r"\(").replace("[", r"\[")):
        PretrainConfig.from_dict(content, where="somewhere")


def test_lossless_conversions_only():
    config = PretrainConfig.from_dict({"lr": 1, "weight_decay": 0, "limit_train_batches": 2})
    assert (
        config.optim.lr == 1.0
        and isinstance(config.optim.lr, float)
        and config.optim.weight_decay == 0.0
        and isinstance(config.optim.weight_decay, float)
    )
    assert config.trainer.limit_train_batches == 2 and isinstance(config.trainer.limit_train_batches, int)


def test_grouped_and_flat_mappings_and_older_names_are_one_configuration():
    grouped = PretrainConfig.from_dict({"eval": {"knn_every": 2, "protocols": ["knn"]}, "method": {"name": "moco"}})
    flat = PretrainConfig.from_dict({"knn_every_n_epochs": 2, "eval_protocols": ["knn"], "method": "moco"})
    assert grouped == flat == PretrainConfig.build(knn_every=2, protocols=["knn"], method="moco")
    assert PretrainConfig.from_dict(grouped.to_dict()) == grouped


def test_config_json_written_before_the_grouping_still_loads():
    """A real run's config.json and summary.json of the flat format (docs/results)."""
    record = read_record(RESULTS / "budget" / "tcl8")
    flat = json.loads((RESULTS / "budget" / "tcl8" / "config.json").read_text())
    assert record.config.optim.epochs == flat["epochs"] == 8 and record.config.data.train_images == 10000
    assert record.config.eval.knn_every == flat["knn_every_n_epochs"] and record.config.model.stem == "imagenet"
    assert record.dataset.classes == 10 and record.dataset.mean == flat["data"]["mean"]
    assert record.method_defaults == flat["method_defaults"]
    summary = read_summary(RESULTS / "budget" / "tcl8")
    assert (
        summary.test["knn_top1"]
        == json.loads((RESULTS / "budget" / "tcl8" / "summary.json").read_text())["test"]["knn_top1"]
    )
    # and a record written now reads back to itself
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_the_groups_that_resume_compare_and_sweep_use_derive_from_the_declarations():
    assert PretrainConfig.group_keys("data") == [
        "dataset", "data_dir", "image_size", "decode_size", "val_fraction", "test_fraction", "train_images",
        "skip_bad_images",
    ]  # fmt: skip
    budget = set(PretrainConfig.budget_keys())
    assert {"dataset", "epochs", "batch_size", "backbone", "supervised", "knn_k", "protocols", "devices"} <= budget
    assert not budget & {"method", "lr", "method_options", "augmentation", "seed", "out", "plots", "workers"}
    assert {"lr", "epochs", "train_images", "method_options", "augmentation_options"} <= set(
        PretrainConfig.sweep_keys()
    )


def test_help_answers_without_importing_torch():
    code = (
        "import sys\nfrom tcl_ssl.cli import main\n"
        "for argv in (['--help'], ['pretrain', '--help'], ['compare', '--help'], ['sweep', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--batch-size BATCH_SIZE" in result.stdout and "Optimisation" in result.stdout


def test_every_flag_and_every_unambiguous_abbreviation_of_before_still_works():
    """The flags ``tcl-ssl pretrain`` had before the options were declared once (tests/data):
    each is still there, and every prefix argparse accepted for one still names only that one."""
    lines = (Path(__file__).parent / "data" / "pretrain_flags_v1.txt").read_text().splitlines()
    old = [line for line in lines if line.startswith("--")]
    new = [*option_flags(), "--list-methods", "--config", "--list-recipes", "--help"]
    assert not set(old) - set(new)
    for flag in old:
        for end in range(3, len(flag)):
            prefix = flag[:end]
            if [f for f in old if f.startswith(prefix)] == [flag]:  # argparse took it for this flag before
                assert [f for f in new if f.startswith(prefix)] == [flag], prefix


@pytest.mark.parametrize(
    "content, key, value",
    [
        ({"precision": 32}, "precision", 32),
        ({"precision": "bf16-mixed"}, "precision", "bf16-mixed"),
        ({"devices": [0, 1]}, "devices", [0, 1]),
        ({"devices": "0,1"}, "devices", "0,1"),
        ({"devices": 2}, "devices", 2),
    ],
)
def test_lightning_s_spellings_of_precision_and_devices_are_accepted(content, key, value):
    assert PretrainConfig.from_dict(content).get(key) == value


def test_a_flat_config_json_with_a_key_of_an_early_version_still_loads():
    content = json.loads((RESULTS / "budget" / "tcl8" / "config.json").read_text()) | {"eval_split": "val"}
    assert RunRecord.from_json(content).config.optim.epochs == 8


def test_the_former_module_name_of_the_run_evaluation_still_imports():
    from tcl_ssl.evaluate import evaluate_run, read_features
    from tcl_ssl.evaluation.run import evaluate_run as now
    from tcl_ssl.evaluation.run import read_features as read_now

    assert (evaluate_run, read_features) == (now, read_now)


def test_the_lightning_names_checked_at_the_door_are_lightnings():
    """tcl_ssl.config.checks lists Lightning's names without importing torch; they must be the
    installed Lightning's (its registries and precision inputs), so no valid value is refused."""
    import typing

    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    from tcl_ssl.config.checks import ACCELERATORS, PRECISIONS, STRATEGIES

    def values(hint):
        return {v for arm in typing.get_args(hint) for v in (values(arm) if typing.get_args(arm) else {arm})}

    assert set(PRECISIONS) == values(_PRECISION_INPUT)
    assert set(STRATEGIES) == {"auto", *StrategyRegistry.available_strategies()}
    assert set(ACCELERATORS) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}


def test_a_reader_that_goes_away_stops_the_command_quietly_with_status_141():
    """``tcl-ssl pretrain --list-recipes | grep -q ...``: the reader closes the pipe before the
    command writes; the command stops without an error message or traceback (status 128 + SIGPIPE)."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tcl_ssl.cli", "pretrain", "--list-recipes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the interpreter has started: its first write finds no reader
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert stderr == ""
