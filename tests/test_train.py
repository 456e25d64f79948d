"""The pretraining recipe end to end on small data: run directory, kNN figures, resume, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.evaluation.knn import knn_accuracy
from tcl_ssl.evaluation.run import evaluate_run, read_features
from tcl_ssl.methods import available_methods, method_class
from tcl_ssl.runs import read_record, read_summary
from tcl_ssl.train import pretrain


def _config(tmp_path, **overrides) -> PretrainConfig:
    base = dict(epochs=1, batch_size=32, limit_train_batches=2, out=str(tmp_path / "run"), knn_k=20, plots=False)
    return PretrainConfig.build(**(base | overrides))


@pytest.mark.parametrize("supervised", [False, True])
def test_pretrain_writes_a_complete_run_directory(tmp_path, small_digits, supervised):
    summary = pretrain(_config(tmp_path, supervised=supervised), data=small_digits)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert read_summary(run) == summary
    config = read_record(run).config
    assert config.method.supervised == supervised and config.model.stem == "imagenet"
    header = (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "val_knn_top1" in header and "val_online_top1" in header and "train_online_cls_top1" in header
    assert summary.splits == {"train": 400, "val": 100, "test": 200}
    for figures in (summary.val, summary.test, summary.random_init["val"], summary.random_init["test"]):
        assert 10.0 < figures["knn_top1"] <= figures["knn_top5"] <= 100.0  # far above chance on digits
    for figures in (summary.val, summary.test, summary.random_init["val"], summary.random_init["test"]):
        assert 10.0 < figures["linear_top1"] <= figures["linear_top5"] <= 100.0
    assert summary.linear_weight_decay in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    online = summary.online_probe
    # one epoch: the monitor's check after it saw the final weights, as the final evaluation does
    assert online.best_epoch == 1 and online.best_val_top1 == pytest.approx(online.final_val_top1)
    assert online.final_test_top1 is not None and 0.0 <= online.final_test_top1 <= 100.0
    assert summary.final_train_loss is not None


def test_train_images_and_the_run_s_throughput_and_memory_are_recorded(tmp_path, small_digits):
    summary = pretrain(_config(tmp_path, train_images=100, knn_every=0, protocols=["knn"]), data=small_digits)
    assert summary.splits == {"train": 100, "val": 100, "test": 200}
    assert read_record(tmp_path / "run").config.data.train_images == 100
    # 2 steps of 32 images, timed from the first batch's start to the last batch's end (inside train_seconds)
    assert summary.images_per_second >= 64 / summary.train_seconds
    assert summary.train_seconds < summary.wall_seconds
    assert 100 < summary.peak_memory.host_rss_mib < 16 * 1024 and summary.peak_memory.cuda_allocated_mib is None


def test_resume_continues_from_the_last_checkpoint(tmp_path, small_digits):
    pretrain(_config(tmp_path), data=small_digits)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first_step = torch.load(ckpt, weights_only=False)["global_step"]
    pretrain(_config(tmp_path, epochs=2, resume=str(ckpt), out=str(tmp_path / "run2")), data=small_digits)
    resumed = torch.load(tmp_path / "run2" / "checkpoints" / "last.ckpt", weights_only=False)
    assert first_step == 2 and resumed["global_step"] == 4


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"epochs": 0}, "epochs"),
        ({"method": "nope"}, "unknown method"),
        ({"augmentation": "nope"}, "unknown augmentation"),
        ({"num_views": 1}, "num_views"),
        ({"lr": -1.0}, "lr"),
        ({"resume": "/no/such.ckpt"}, "resume"),
        ({"method_options": {"k9": 1.0}}, "does not accept"),
        ({"method_options": {"k1": -1.0}}, "k1"),
    ],
)
def test_bad_configuration_fails_before_training(tmp_path, small_digits, overrides, match):
    with pytest.raises(ValueError, match=match):
        pretrain(_config(tmp_path, **overrides), data=small_digits)


def test_cli_pretrains_on_an_image_folder_and_prints_a_summary(tmp_path, capsys, monkeypatch):
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(40):
            write_png(
                torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=gen),
                str(tmp_path / "images" / cls / f"{i}.png"),
            )
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))
    code = main(
        [
            "pretrain",
            "--dataset",
            str(tmp_path / "images"),
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--knn-k",
            "5",
            "--out",
            str(tmp_path / "run"),
            "--k1",
            "10",
            "--val-fraction",
            "0.25",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| knn_top1 |" in out and "random init, test" in out
    record = read_record(tmp_path / "run")
    # 80 images: 16 test (0.2), then 16 of the remaining 64 for validation (0.25)
    assert (record.dataset.train, record.dataset.val, record.dataset.test) == (48, 16, 16)
    assert record.config.method.options == {"k1": 10.0}
    assert {p.name for p in (tmp_path / "run" / "plots").iterdir()} == {"curves.png", "tsne.png", "confusion.png"}
    # tcl-ssl eval reloads the folder with the run's splits, and keeps earlier protocols' figures
    summary = read_summary(tmp_path / "run")
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--protocols",
                "knn",
                "--no-plots",
                "--save-features",
                str(tmp_path / "features.pt"),
            ]
        )
        == 0
    )
    assert main(["eval", str(tmp_path / "run"), "--protocols", "linear", "--no-plots"]) == 0
    (entry,) = json.loads((tmp_path / "run" / "eval.json").read_text())["entries"].values()
    assert entry["dataset"] == str(tmp_path / "images") and entry["step"] > 0
    assert entry["splits"] == {"train": 48, "val": 16, "test": 16} and entry["protocols"] == ["knn", "linear"]
    assert entry["test"]["knn_top1"] == pytest.approx(summary.test["knn_top1"])  # the run's k (5)
    assert entry["test"]["linear_top1"] == pytest.approx(summary.test["linear_top1"])
    # the saved features are the ones the protocols used: kNN on them gives the same figure
    saved = read_features(tmp_path / "features.pt")
    assert {name: len(labels) for name, (_, labels) in saved.items()} == {"train": 48, "val": 16, "test": 16}
    unit = {name: torch.nn.functional.normalize(features, dim=1) for name, (features, _) in saved.items()}
    again = knn_accuracy(unit["train"], saved["train"][1], unit["test"], saved["test"][1], 2, k=5)
    assert again["top1"] == pytest.approx(entry["test"]["knn_top1"])


def test_cli_reports_bad_input_without_a_traceback(capsys):
    assert main(["pretrain", "--dataset", "no-such-data", "--out", "/tmp/unused-run"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_resume_keeps_the_saved_configuration_and_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--supervised",
        "--k1",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--limit-train-batches",
        "2",
        "--knn-every",
        "0",
        "--knn-k",
        "10",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    # rerunning with the run's --out resumes it; "--epoch" is argparse's prefix of --epochs
    assert main(["pretrain", "--out", str(run), "--epoch", "2"]) == 0
    assert "resuming it from its last checkpoint" in capsys.readouterr().err
    saved = read_record(run)  # kept from the first run, but for epochs
    config = saved.config
    assert config.method.supervised and config.method.options == {"k1": 3.0} and config.optim.epochs == 2
    (resumed,) = saved.resumes
    assert resumed["changed"] == {"epochs": {"was": 1, "now": 2}}
    assert resumed["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    summary = read_summary(run)
    assert summary.supervised and summary.epochs == 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert (run / "logs" / "version_1" / "metrics.csv").is_file()  # the first run's logs are kept
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run / "checkpoints" / "last.ckpt"), "--val-fraction", "0.2"]) == 2
    assert "holds a run of another configuration (val_fraction: None there, 0.2 given)" in capsys.readouterr().err


#: every registered method in every setting it trains in (TCL's own runs are the tests above)
EVERY_METHOD = [
    (name, supervised)
    for name in available_methods()
    if name != "tcl"
    for supervised, trains in ((False, method_class(name).without_labels), (True, method_class(name).with_labels))
    if trains
]


@pytest.mark.parametrize("method,supervised", EVERY_METHOD)
def test_every_method_pretrains_through_the_recipe(tmp_path, small_digits, method, supervised):
    options = {"queue_size": 256} if "queue_size" in method_class(method).options() else {}
    config = _config(tmp_path, method=method, supervised=supervised, knn_every=0, method_options=options)
    summary = pretrain(config, data=small_digits)
    saved = read_record(tmp_path / "run")
    defaults = method_class(method).defaults
    assert summary.method == method and summary.final_train_loss is not None
    optim, chosen = saved.config.optim, saved.config.method
    assert (optim.optimizer, optim.lr, chosen.augmentation, chosen.num_views) == (
        defaults.optimizer,
        defaults.lr,
        defaults.augmentation,
        defaults.num_views,
    )
    assert saved.method_defaults == method_class(method).options()
    # tcl-ssl eval rebuilds any method's backbone from its checkpoint
    entry = evaluate_run(tmp_path / "run", ["knn", "linear", "retrieval"], data=small_digits, plots=False)
    assert entry["test"]["knn_top1"] == pytest.approx(summary.test["knn_top1"])
    assert entry["test"]["linear_top1"] == pytest.approx(summary.test["linear_top1"])
    assert all(0.0 < entry["test"][name] <= 100.0 for name in ("precision_at_1", "r_precision", "map_at_r"))
    assert entry["test"]["precision_at_1"] > 10.0  # above chance (10 classes)
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["entries"] == {
        f"mnist5k@{entry['weights_sha256'][:16]}": entry
    }


def test_recipe_fields_resolve_to_the_method_defaults_unless_given():
    byol = PretrainConfig.build(method="byol", epochs=8).resolved()
    assert (byol.optim.optimizer, byol.optim.lr, byol.optim.weight_decay, byol.method.augmentation) == (
        "lars",
        0.45,
        1e-6,
        "byol",
    )
    assert byol.optim.warmup_epochs == 1  # 10 by the method's defaults, at most a tenth of 8 epochs (rounded)
    assert PretrainConfig.build(method="byol", epochs=200).resolved().optim.warmup_epochs == 10
    assert PretrainConfig.build(method="tcl", epochs=1).resolved().optim.warmup_epochs == 0  # not all warm-up
    given = PretrainConfig.build(
        method="byol", epochs=8, lr=0.3, optimizer="sgd", warmup_epochs=5, num_views=2
    ).resolved()
    assert (given.optim.optimizer, given.optim.lr, given.optim.warmup_epochs) == ("sgd", 0.3, 5)
    assert PretrainConfig.build(method="ce").resolved().method.num_views == 1


def test_cli_passes_method_options_and_lists_the_methods(tmp_path, capsys):
    from tcl_ssl.cli import build_parser
    from tcl_ssl.cli.options import given_options

    args = build_parser().parse_args(
        ["pretrain", "--method", "moco", "-o", "queue_size=8192", "-o", "momentum_start=0.996", "--optimizer", "lars"]
    )
    given = given_options(args)
    assert given == {
        "method": "moco",
        "method_options": {"queue_size": 8192, "momentum_start": 0.996},
        "optimizer": "lars",
    }
    assert main(["pretrain", "--list-methods"]) == 0
    listed = capsys.readouterr().out
    assert all(f"| `{name}` |" in listed for name in available_methods())
    moco_row = next(line for line in listed.splitlines() if line.startswith("| `moco` |"))
    assert "| temperature 0.1, 0.2, 0.5; momentum_start 0.9, 0.99; queue_size 1024, 4096 |" in moco_row
    assert main(["pretrain", "--method", "moco", "-o", "k1=3", "--out", str(tmp_path / "x")]) == 2
    assert "does not accept options k1; allowed: momentum_start" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method,option,match",
    [
        ("moco", "queue_size=8192.5", "queue_size must be an integer >= 1, got 8192.5"),
        ("moco", "temperature=-0.5", "temperature must be a finite number > 0, got -0.5"),
        ("moco", "momentum_start=abc", "momentum_start must be a number in [0, 1], got 'abc'"),
        ("byol", "hidden_dim=0", "hidden_dim must be an integer >= 1, got 0"),
        ("simclr", "hidden_dim=0", "hidden_dim must be an integer >= 1, got 0"),
        ("supcon", "base_temperature=0", "base_temperature must be a finite number > 0, got 0"),
        ("moco", "queue_size", "--method-option must be NAME=VALUE"),
    ],
)
def test_cli_refuses_bad_method_option_values_before_loading_data(method, option, match, capsys, monkeypatch):
    import tcl_ssl.train as train

    monkeypatch.setattr(
        train, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the options were checked")
    )
    supervised = ["--supervised"] if method == "supcon" else []
    assert main(["pretrain", "--method", method, *supervised, "-o", option, "--out", "/tmp/unused-run"]) == 2
    assert match in capsys.readouterr().err


def test_cli_resume_changes_only_the_given_options_in_any_spelling(tmp_path):
    from tcl_ssl.cli import build_parser
    from tcl_ssl.cli.options import given_options
    from tcl_ssl.cli.pretraining import resumed_config

    run = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                "--method",
                "moco",
                "-o",
                "queue_size=256",
                "-o",
                "temperature=0.3",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--limit-train-batches",
                "2",
                "--knn-every",
                "0",
                "--knn-k",
                "10",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    ckpt = str(run / "checkpoints" / "last.ckpt")
    parser = build_parser()
    for argv, options, epochs in (
        (["pretrain", "--resume", ckpt, "-oqueue_size=512", "--epochs=3"], {"queue_size": 512, "temperature": 0.3}, 3),
        (["pretrain", "--resume", ckpt, "--method-opt", "temperature=0.4"], {"queue_size": 256, "temperature": 0.4}, 1),
    ):
        given = given_options(parser.parse_args(argv))
        config = resumed_config(given.pop("resume"), given)
        assert (config.method.name, config.optim.batch_size, config.optim.epochs) == ("moco", 64, epochs)
        assert config.method.options == options and config.run.out == str(run)
    # with --out, the resumed run continues there (a branch), leaving the original as it is
    given = given_options(parser.parse_args(["pretrain", "--resume", ckpt, "--out", str(tmp_path / "branch")]))
    assert resumed_config(given.pop("resume"), given).run.out == str(tmp_path / "branch")


def test_export_round_trip_gives_the_checkpoint_backbones_features(tmp_path, small_digits, capsys):
    from tcl_ssl import load_backbone
    from tcl_ssl.train import build_method

    config = _config(tmp_path, method="byol", knn_every=0, protocols=["knn"])
    pretrain(config, data=small_digits)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "backbone.pt")]) == 0
    assert "tcl_ssl.load_backbone" in capsys.readouterr().out
    exported = load_backbone(tmp_path / "backbone.pt")
    # the backbone as training left it, read from the checkpoint by Lightning's own loader
    method = build_method(config.resolved(), small_digits)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    method.load_state_dict(state)
    images = small_digits.test.images[:16]
    mean = torch.tensor(small_digits.mean).view(1, -1, 1, 1)
    std = torch.tensor(small_digits.std).view(1, -1, 1, 1)
    expected = method.backbone.eval()((images.float() / 255 - mean) / std)
    torch.testing.assert_close(exported(images), expected, rtol=1e-5, atol=1e-5)
    assert exported.feature_dim == 512 and exported.image_size == 28
    # a plain torchvision ResNet-18 with the recorded stem takes the state dict as it is
    payload = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert not any(key.startswith("fc.") for key in payload["state_dict"])
    assert payload["stem"] == "imagenet" and payload["in_channels"] == 1
    with pytest.raises(ValueError, match="is not a backbone exported by tcl-ssl export"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_backbone(tmp_path / "other.pt")


def test_eval_transfers_a_backbone_to_another_dataset(tmp_path, small_digits, monkeypatch, capsys):
    from torchvision.io import write_png

    pretrain(_config(tmp_path, knn_every=0, protocols=["knn"]), data=small_digits)
    gen = torch.Generator().manual_seed(0)
    for cls, level in (("dark", 40), ("light", 200)):  # RGB 20 px images: converted to gray 28 px
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(30):
            image = (level + torch.randint(-30, 30, (3, 20, 20), generator=gen)).clamp(0, 255).to(torch.uint8)
            write_png(image, str(tmp_path / "images" / cls / f"{i}.png"))
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--dataset",
                str(tmp_path / "images"),
                "--protocols",
                "knn,linear",
                "--knn-k",
                "5",
                "--no-plots",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| knn_top1 |" in out and "| linear_top1 |" in out
    entries = json.loads((tmp_path / "run" / "eval.json").read_text())["entries"]
    (entry,) = (e for e in entries.values() if e["dataset"] == str(tmp_path / "images"))
    assert entry["splits"] == {"train": 43, "val": 5, "test": 12}
    assert entry["test"]["knn_top1"] == 100.0  # brightness alone separates the two classes
    with pytest.raises(SystemExit) as refused:  # refused by the parser, as pretrain's --protocols
        main(["eval", str(tmp_path / "run"), "--protocols", "knn,nope"])
    assert refused.value.code == 2
    assert "protocols must be a non-empty subset of knn, linear, linear-aug, retrieval" in capsys.readouterr().err


def test_tensorboard_logger_is_refused_without_the_package(tmp_path, small_digits, monkeypatch):
    import tcl_ssl.preflight

    monkeypatch.setattr(tcl_ssl.preflight, "tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match="logger 'tensorboard' needs the tensorboard package"):
        pretrain(_config(tmp_path, logger="tensorboard"), data=small_digits)


def _read_scalars(event_file) -> dict[str, list[float]]:
    """Scalars of a TensorBoard event file, parsed from its TFRecord framing with tensorboardX's protos."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, scalars, at = event_file.read_bytes(), {}, 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = Event.FromString(data[at + 12 : at + 12 + length])  # after the length and its CRC
        at += 12 + length + 4  # the payload's CRC
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


def test_tensorboard_logger_writes_the_same_metrics_as_the_csv_log(tmp_path, small_digits):
    pytest.importorskip("tensorboardX")
    pretrain(_config(tmp_path, logger="tensorboard", epochs=2), data=small_digits)
    (event_file,) = (tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")
    scalars = _read_scalars(event_file)
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open()))
    for tag in ("train_loss_epoch", "val_knn_top1", "val_online_top1"):
        logged = [float(row[tag]) for row in rows if row.get(tag)]
        assert len(logged) >= 2
        np.testing.assert_allclose(scalars[tag], logged, rtol=1e-6)


def test_metrics_every_n_steps_sets_the_per_step_rows_of_the_metrics_file(tmp_path, small_digits):
    pretrain(_config(tmp_path, metrics_every_n_steps=1, knn_every=0, protocols=["knn"]), data=small_digits)
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open()))
    assert [int(row["step"]) for row in rows if row.get("train_loss_step")] == [0, 1]  # both steps of 2
    assert read_record(tmp_path / "run").config.trainer.metrics_every_n_steps == 1
