"""The pretraining recipe end to end on small data: run directory, kNN figures, resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tcl_ssl.cli import main
from tcl_ssl.data import ImageData, Split, load_builtin
from tcl_ssl.methods import method_class
from tcl_ssl.train import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def small_digits() -> ImageData:
    """400 train / 200 test built-in digits: enough for a real kNN, fast on 2 cores."""
    data = load_builtin()
    keep_train = torch.arange(0, 4000, 10)
    keep_test = torch.arange(0, 1000, 5)
    return ImageData(
        data.name,
        Split(data.train.images[keep_train], data.train.labels[keep_train]),
        Split(data.test.images[keep_test], data.test.labels[keep_test]),
        data.num_classes,
        data.mean,
        data.std,
    )


def _config(tmp_path, **overrides) -> PretrainConfig:
    base = dict(epochs=1, batch_size=32, limit_train_batches=2, out=str(tmp_path / "run"), knn_k=20)
    return PretrainConfig(**(base | overrides))


@pytest.mark.parametrize("supervised", [False, True])
def test_pretrain_writes_a_complete_run_directory(tmp_path, small_digits, supervised):
    summary = pretrain(_config(tmp_path, supervised=supervised), data=small_digits)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "summary.json").read_text()) == summary
    config = json.loads((run / "config.json").read_text())
    assert config["supervised"] == supervised and config["stem"] == "imagenet"
    assert "knn_top1" in (run / "logs" / "version_0" / "metrics.csv").read_text()
    for key in ("knn_top1", "random_init_knn_top1"):
        assert 10.0 < summary[key] <= 100.0  # far above chance on digits, even at random init
    assert summary["final_train_loss"] is not None


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
            write_png(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=gen), str(tmp_path / "images" / cls / f"{i}.png"))
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))
    code = main([
        "pretrain", "--dataset", str(tmp_path / "images"), "--image-size", "16", "--epochs", "1",
        "--batch-size", "16", "--knn-k", "5", "--out", str(tmp_path / "run"), "--k1", "10",
        "--val-fraction", "0.25",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "kNN top-1, pretrained" in out and "kNN top-1, random init" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["train"] == 60 and config["method_options"] == {"k1": 10.0}


def test_cli_reports_bad_input_without_a_traceback(capsys):
    assert main(["pretrain", "--dataset", "no-such-data", "--out", "/tmp/unused-run"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_resume_keeps_the_saved_configuration_and_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--supervised", "--k1", "3", "--epochs", "1", "--batch-size", "64",
            "--limit-train-batches", "2", "--knn-every", "0", "--knn-k", "10", "--out", str(run)]
    assert main(args) == 0
    assert main(["pretrain", "--resume", str(run / "checkpoints" / "last.ckpt"), "--epochs", "2"]) == 0
    config = json.loads((run / "config.json").read_text())  # kept from the first run
    assert config["supervised"] and config["method_options"] == {"k1": 3.0}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["supervised"] and summary["epochs"] == 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert (run / "logs" / "version_1" / "metrics.csv").is_file()  # the first run's logs are kept


@pytest.mark.parametrize(
    "method,supervised",
    [("simclr", False), ("moco", False), ("moco-tcl", False), ("byol", False),
     ("moco-tcl", True), ("supcon", True), ("ce", True)],
)
def test_every_method_pretrains_through_the_recipe(tmp_path, small_digits, method, supervised):
    options = {"queue_size": 256} if method.startswith("moco") else {}
    config = _config(tmp_path, method=method, supervised=supervised, knn_every_n_epochs=0, method_options=options)
    summary = pretrain(config, data=small_digits)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    defaults = method_class(method).defaults
    assert summary["method"] == method and summary["final_train_loss"] is not None
    assert (saved["optimizer"], saved["lr"], saved["augmentation"], saved["num_views"]) == (
        defaults.optimizer, defaults.lr, defaults.augmentation, defaults.num_views)
    assert saved["method_defaults"] == method_class(method).options()


def test_recipe_fields_resolve_to_the_method_defaults_unless_given():
    byol = PretrainConfig(method="byol", epochs=8).resolved()
    assert (byol.optimizer, byol.lr, byol.weight_decay, byol.augmentation) == ("lars", 0.45, 1e-6, "byol")
    assert byol.warmup_epochs == 1  # 10 by the recipe, at most a tenth of 8 epochs (rounded)
    assert PretrainConfig(method="byol", epochs=200).resolved().warmup_epochs == 10
    assert PretrainConfig(method="tcl", epochs=1).resolved().warmup_epochs == 0  # not all warm-up
    given = PretrainConfig(method="byol", epochs=8, lr=0.3, optimizer="sgd", warmup_epochs=5, num_views=2).resolved()
    assert (given.optimizer, given.lr, given.warmup_epochs) == ("sgd", 0.3, 5)
    assert PretrainConfig(method="ce").resolved().num_views == 1


def test_cli_passes_method_options_and_lists_the_methods(tmp_path, capsys):
    from tcl_ssl.cli import _config_from_args, build_parser

    args = build_parser().parse_args(
        ["pretrain", "--method", "moco", "-o", "queue_size=8192", "-o", "momentum_start=0.996", "--optimizer", "lars"]
    )
    config = _config_from_args(args)
    assert config.method_options == {"queue_size": 8192, "momentum_start": 0.996} and config.optimizer == "lars"
    assert main(["pretrain", "--list-methods"]) == 0
    listed = capsys.readouterr().out
    assert all(f"| `{name}` |" in listed for name in ("tcl", "simclr", "moco", "moco-tcl", "byol", "supcon", "ce"))
    assert main(["pretrain", "--method", "moco", "-o", "k1=3", "--out", str(tmp_path / "x")]) == 2
    assert "does not accept options k1; allowed: momentum_start" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method,option,match",
    [("moco", "queue_size=8192.5", "queue_size must be an integer >= 1, got 8192.5"),
     ("moco", "temperature=-0.5", "temperature must be a finite number > 0, got -0.5"),
     ("moco", "momentum_start=abc", "momentum_start must be a number in [0, 1], got 'abc'"),
     ("byol", "hidden_dim=0", "hidden_dim must be an integer >= 1, got 0"),
     ("simclr", "hidden_dim=0", "hidden_dim must be an integer >= 1, got 0"),
     ("supcon", "base_temperature=0", "base_temperature must be a finite number > 0, got 0"),
     ("moco", "queue_size", "--method-option must be NAME=VALUE")],
)
def test_cli_refuses_bad_method_option_values_before_loading_data(method, option, match, capsys, monkeypatch):
    import tcl_ssl.train as train

    monkeypatch.setattr(train, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the options were checked"))
    supervised = ["--supervised"] if method == "supcon" else []
    assert main(["pretrain", "--method", method, *supervised, "-o", option, "--out", "/tmp/unused-run"]) == 2
    assert match in capsys.readouterr().err


def test_cli_resume_changes_only_the_given_options_in_any_spelling(tmp_path):
    from tcl_ssl.cli import _resumed_config, build_parser

    run = tmp_path / "run"
    assert main(["pretrain", "--method", "moco", "-o", "queue_size=256", "-o", "temperature=0.3", "--epochs", "1",
                 "--batch-size", "64", "--limit-train-batches", "2", "--knn-every", "0", "--knn-k", "10",
                 "--out", str(run)]) == 0
    ckpt = str(run / "checkpoints" / "last.ckpt")
    parser = build_parser()
    for argv, options, epochs in (
        (["pretrain", "--resume", ckpt, "-oqueue_size=512", "--epochs=3"], {"queue_size": 512, "temperature": 0.3}, 3),
        (["pretrain", "--resume", ckpt, "--method-opt", "temperature=0.4"], {"queue_size": 256, "temperature": 0.4}, 1),
    ):
        args, _ = parser.parse_known_args(argv)
        config = _resumed_config(args, argv)
        assert (config.method, config.batch_size, config.epochs) == ("moco", 64, epochs)
        assert config.method_options == options
