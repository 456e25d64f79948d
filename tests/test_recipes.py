"""Recipe files: the packaged ones hold the paper's settings; --config loads a file and the command line overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.config.recipes import available, load_recipe
from tcl_ssl.methods import OptimConfig
from tcl_ssl.preflight import check_run
from tcl_ssl.runs import read_record

CIFAR10 = "../shared/datasets/cifar10-jpeg/train"


def recipe_config(name, **given) -> PretrainConfig:
    """A packaged or file recipe's configuration, resolved; ``dataset`` given where it requires one."""
    recipe = load_recipe(name)
    if "dataset" in recipe.requires:
        given.setdefault("dataset", CIFAR10)
    return recipe.config(**given).resolved()


PAPER_DATASETS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "fashion-mnist": "fashion-mnist",
    "imagenet100": "data/imagenet100",
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))


def test_every_packaged_recipe_loads_into_a_valid_configuration(tmp_path):
    assert available()
    for name in available():
        check_run(recipe_config(name, out=str(tmp_path / name)))  # every value one the run accepts


@pytest.mark.parametrize("dataset", sorted(PAPER_DATASETS))
def test_paper_recipes_hold_the_papers_supervised_settings(dataset):
    """The settings as the paper states them (issue 10): ResNet-50, 64 images x 2 views, SGD lr 0.1
    at batch 64, momentum 0.9, weight decay 1e-4, 100 epochs, cosine, t = 0.1, k1 = 5000, k2 = 1,
    AutoAugment; linear probe 50 epochs, lr 0.5."""
    config = recipe_config(f"paper-supervised-{dataset}")
    method, options = config.method, config.optim
    assert (method.name, method.supervised, config.data.dataset) == ("tcl", True, PAPER_DATASETS[dataset])
    assert (config.model.backbone, options.batch_size, method.num_views, options.epochs) == ("resnet50", 64, 2, 100)
    assert options.lr is not None and options.weight_decay is not None and options.warmup_epochs is not None
    assert options.optimizer is not None
    optim = OptimConfig(
        lr=options.lr,
        weight_decay=options.weight_decay,
        warmup_epochs=options.warmup_epochs,
        batch_size=options.batch_size,
        optimizer=options.optimizer,
    )
    assert optim.peak_lr(world_size=1) == pytest.approx(0.1)  # the lr actually used at batch 64
    assert (optim.optimizer, optim.momentum, optim.weight_decay, optim.warmup_epochs) == ("sgd", 0.9, 1e-4, 0)
    assert method.options == {"temperature": 0.1, "k1": 5000.0, "k2": 1.0}
    assert method.augmentation == "supcon"  # padded crop + flip + AutoAugment
    evaluation = config.eval
    assert (evaluation.linear_aug_epochs, evaluation.linear_aug_lr) == (
        50,
        0.5,
    ) and "linear-aug" in evaluation.protocols


def test_config_file_values_are_used_and_the_command_line_overrides_them(tmp_path, image_folder, capsys):
    recipe = tmp_path / "small.yaml"
    recipe.write_text(
        "description: a small test recipe\n"
        f"dataset: {tmp_path / 'images'}\nepochs: 3\nbatch_size: 16\nknn_k: 7\n"
        "method_options: {k1: 2.0, temperature: 0.2}\neval_protocols: [knn]\nknn_every_n_epochs: 0\nplots: false\n"
    )
    out = tmp_path / "run"
    argv = [
        "pretrain",
        "--config",
        str(recipe),
        "--epochs",
        "1",
        "--k1",
        "3",
        "--limit-train-batches",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    saved = read_record(out).config
    assert saved.run.recipe == str(recipe.resolve())
    assert (saved.optim.batch_size, saved.eval.knn_k, saved.data.dataset) == (16, 7, str(tmp_path / "images"))
    assert saved.optim.epochs == 1  # the command line over the file
    assert saved.method.options == {"k1": 3.0, "temperature": 0.2}  # merged, the command line winning
    assert saved.eval.protocols == ["knn"] and saved.eval.plots is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("epochs: 2\nbogus: 1\n", "has unknown option(s) bogus; allowed:"),
        ("optim:\n  epochs: 2\n  bogus: 1\n", "has unknown option 'bogus' in group 'optim'"),
        ("- just\n- a list\n", "must be a mapping of option names to values, got list"),
        ("epochs: [1\n", "is not valid YAML"),
        ("epochs: 0\n", "epochs must be an integer >= 1, got 0"),
        ("supervised: 'no'\n", "supervised must be true or false, got 'no'"),
        ("optim: {optimizer: adam}\n", "optimizer must be one of 'sgd', 'lars' or null, got 'adam'"),
        ("out: somewhere\n", "sets 'out', which belongs to a run, not a recipe"),
    ],
)
def test_bad_recipe_files_are_refused_by_name(tmp_path, capsys, content, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(content)
    assert main(["pretrain", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err, err


def test_unknown_recipe_names_list_the_packaged_ones(capsys, tmp_path):
    assert main(["pretrain", "--config", "nope", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'nope'" in err and "paper-supervised-cifar10" in err
    assert main(["pretrain", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in available())


# solo-learn's published CIFAR settings (scripts/pretrain/cifar/{simclr,mocov2plus,byol}.yaml), written out
SOLO_LEARN = {
    "simclr": {"optimizer": "lars", "lr": 0.4, "weight_decay": 1e-4, "temperature": 0.2, "proj": (2048, 256)},
    "moco": {
        "optimizer": "sgd",
        "lr": 0.3,
        "weight_decay": 1e-4,
        "temperature": 0.2,
        "proj": (2048, 256),
        "queue_size": 32768,
        "momentum": (0.99, 0.999),
    },
    "byol": {"optimizer": "lars", "lr": 1.0, "weight_decay": 1e-5, "proj": (4096, 256), "momentum": (0.99, 1.0)},
}


# solo-learn's ImageNet-100 settings (scripts/pretrain/imagenet-100/*.yaml at 9187ea3; lr at batch 256,
# 2 GPUs x 128), the augmentations as ours: symmetric = simclr at jitter strength 1, symmetric_weak = mocov2
# with crops from 8 %, asymmetric = byol
SOLO_LEARN_IMAGENET100 = {
    "simclr": {
        "optimizer": "lars",
        "lr": 0.3,
        "weight_decay": 1e-4,
        "temperature": 0.2,
        "proj": (4096, 512),
        "augmentation": ("simclr", {"jitter_strength": 1.0}),
    },
    "moco": {
        "optimizer": "sgd",
        "lr": 0.3,
        "weight_decay": 1e-4,
        "temperature": 0.2,
        "proj": (2048, 256),
        "queue_size": 65536,
        "momentum": (0.99, 0.999),
        "augmentation": ("mocov2", {"min_scale": 0.08}),
    },
    "byol": {
        "optimizer": "lars",
        "lr": 0.5,
        "weight_decay": 1e-6,
        "proj": (4096, 256),
        "momentum": (0.99, 1.0),
        "augmentation": ("byol", {}),
    },
}


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "tcl", "moco-tcl"])
def test_gpu_imagenet100_recipes_hold_solo_learns_settings(method):
    reference = SOLO_LEARN_IMAGENET100[{"tcl": "simclr", "moco-tcl": "moco"}.get(method, method)]
    config = recipe_config(f"gpu-ssl-imagenet100-{method}").flat()
    options = config["method_options"]
    assert (config["method"], config["supervised"], config["dataset"], config["image_size"], config["decode_size"]) == (
        method,
        False,
        "data/imagenet100",
        224,
        256,
    )
    assert (config["backbone"], config["batch_size"], config["epochs"], config["warmup_epochs"]) == (
        "resnet18",
        256,
        400,
        10,
    )
    assert (config["optimizer"], config["lr"], config["weight_decay"]) == (
        reference["optimizer"],
        reference["lr"],
        reference["weight_decay"],
    )
    assert (config["augmentation"], config["augmentation_options"]) == reference["augmentation"]
    assert (options["hidden_dim"], options["output_dim"]) == reference["proj"]
    for name in ("temperature", "queue_size"):
        if name in reference:
            assert options[name] == reference[name]
    if "momentum" in reference:
        assert (options["momentum_start"], options["momentum_end"]) == reference["momentum"]
    if method in ("tcl", "moco-tcl"):
        assert (options["k1"], options["k2"]) == ((30.0, 1.0) if method == "tcl" else (1.0, 1.0))


def test_a_recipe_with_an_augmentation_option_its_augmentation_lacks_is_refused(tmp_path):
    config = PretrainConfig.build(
        augmentation="mocov2", augmentation_options={"jitter_strength": 1.0}, out=str(tmp_path)
    )
    with pytest.raises(ValueError, match="unknown option.s. jitter_strength for pipeline 'mocov2'"):
        check_run(config)


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "tcl", "moco-tcl"])
def test_gpu_self_supervised_recipes_hold_solo_learns_settings(method):
    reference = SOLO_LEARN[{"tcl": "simclr", "moco-tcl": "moco"}.get(method, method)]
    config = recipe_config(f"gpu-ssl-cifar10-{method}").flat()
    options = config["method_options"]
    assert (config["method"], config["supervised"], config["dataset"]) == (method, False, "cifar10")
    assert (config["backbone"], config["stem"], config["batch_size"], config["epochs"]) == (
        "resnet18",
        "small",
        256,
        1000,
    )
    assert (config["optimizer"], config["lr"], config["weight_decay"]) == (
        reference["optimizer"],
        reference["lr"],
        reference["weight_decay"],
    )
    assert (options["hidden_dim"], options["output_dim"]) == reference["proj"]
    if "temperature" in reference:
        assert options["temperature"] == reference["temperature"]
    if "momentum" in reference:
        assert (options["momentum_start"], options["momentum_end"]) == reference["momentum"]
    if "queue_size" in reference:
        assert options["queue_size"] == reference["queue_size"]
    if method == "tcl":
        assert (options["k1"], options["k2"]) == (30.0, 1.0)


def test_a_recipe_extends_another_and_merges_its_option_mappings(tmp_path):
    (tmp_path / "budget.yaml").write_text("epochs: 5\nbatch_size: 64\nmethod_options: {temperature: 0.2, k2: 1.0}\n")
    (tmp_path / "child.yaml").write_text(
        "extends: budget.yaml\nmethod: tcl\nbatch_size: 32\nmethod_options: {k1: 30.0}\n"
    )
    assert load_recipe(tmp_path / "child.yaml").options == {
        "epochs": 5,
        "batch_size": 32,
        "method": "tcl",
        "method_options": {"temperature": 0.2, "k2": 1.0, "k1": 30.0},
    }
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="extends itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ValueError, match="unknown recipe 'nowhere'"):
        load_recipe(tmp_path / "orphan.yaml")


def _cifar_budget(budget: dict) -> tuple:
    keys = ("dataset", "train_images", "image_size", "backbone", "stem", "batch_size", "epochs")
    return tuple(budget[key] for key in keys)


def test_the_cpu_8min_family_gives_every_self_supervised_method_one_budget():
    from tcl_ssl.experiments.compare import check_budget, default_methods

    methods = default_methods(supervised=False)
    assert len(methods) == 15
    configs = {m: recipe_config(f"cpu-8min-ssl-{m}") for m in methods}
    assert {m: c.method.name for m, c in configs.items()} == {m: m for m in methods}
    budget = check_budget(configs)  # raises if any budget field differs
    assert budget["supervised"] is False
    assert _cifar_budget(budget) == (CIFAR10, 10000, 32, "resnet18", "imagenet", 128, 10)
    # one warm-up epoch for every method (10 epochs: a tenth of the run)
    assert {c.resolved().optim.warmup_epochs for c in configs.values()} == {1}


@pytest.mark.parametrize(
    "setting, methods", [("ssl", ("tcl", "simclr", "moco", "moco-tcl", "byol")), ("sup", ("tcl", "supcon", "ce"))]
)
def test_cpu_small_recipes_give_every_method_of_a_setting_one_budget(setting, methods):
    from tcl_ssl.experiments.compare import check_budget

    configs = {m: recipe_config(f"cpu-small-{setting}-{m}") for m in methods}
    assert {m: c.method.name for m, c in configs.items()} == {m: m for m in methods}
    budget = check_budget(configs)  # raises if any budget field differs
    assert budget["supervised"] is (setting == "sup")
    assert _cifar_budget(budget) == (CIFAR10, 10000, 32, "resnet18", "imagenet", 256, 4)
    if setting == "ssl":  # the choices of the search on validation (docs/results/tuning-ssl.md)
        from tcl_ssl.methods import method_class

        chosen = {
            m: (c.optim.lr, (method_class(m).resolved_options(False) | c.method.options).get("temperature"))
            for m, c in configs.items()
        }
        assert chosen == {
            "tcl": (0.06, 0.1),
            "simclr": (2.0, 0.1),
            "moco": (0.15, 0.1),
            "moco-tcl": (0.15, 0.2),
            "byol": (0.9, None),
        }
    else:  # docs/results/tuning-sup.md
        chosen = {m: (c.optim.lr, c.method.options) for m, c in configs.items()}
        assert chosen == {
            "tcl": (0.06, {"temperature": 0.1, "k1": 10.0}),
            "supcon": (0.0625, {"temperature": 0.2}),
            "ce": (0.025, {}),
        }


@pytest.mark.parametrize("dataset", sorted(PAPER_DATASETS))
def test_paper_supervised_recipes_give_tcl_supcon_and_ce_one_budget(dataset):
    from tcl_ssl.experiments.compare import check_budget

    configs = {m: recipe_config(f"paper-supervised-{dataset}-{m}") for m in ("tcl", "supcon", "ce")}
    budget = check_budget(configs)
    assert (budget["backbone"], budget["batch_size"], budget["epochs"], budget["supervised"]) == (
        "resnet50",
        64,
        100,
        True,
    )
    assert configs["tcl"].method.options == {"temperature": 0.1, "k1": 5000.0, "k2": 1.0}
    # SupCon's official settings (lr 0.5 at batch 1024, t = 0.1) and its cross-entropy baseline's (lr 0.8 at 1024, one view)
    assert (configs["supcon"].optim.lr, configs["supcon"].method.options) == (
        0.125,
        {"temperature": 0.1, "base_temperature": 0.07},
    )
    ce = configs["ce"]
    assert (ce.optim.lr, ce.method.num_views, ce.method.options) == (0.2, 1, {})
    assert {c.method.augmentation for c in configs.values()} == {"supcon"}  # AutoAugment for all three


def test_a_recipe_for_another_method_inherits_only_the_options_its_method_takes(tmp_path):
    (tmp_path / "tcl.yaml").write_text("method: tcl\nmethod_options: {temperature: 0.2, k1: 30.0}\n")
    (tmp_path / "supcon.yaml").write_text(
        "extends: tcl.yaml\nmethod: supcon\nmethod_options: {base_temperature: 0.1}\n"
    )
    assert load_recipe(tmp_path / "supcon.yaml").options["method_options"] == {
        "temperature": 0.2,
        "base_temperature": 0.1,
    }
    (tmp_path / "typo.yaml").write_text("extends: tcl.yaml\nmethod: supcon\nmethod_options: {k1: 3.0}\n")
    with pytest.raises(ValueError, match="does not accept options k1"):
        check_run(load_recipe(tmp_path / "typo.yaml").config(out=str(tmp_path / "run")))


def test_a_budget_recipe_requires_the_dataset_from_the_command_line(capsys, tmp_path):
    with pytest.raises(ValueError, match="recipe .*cpu-small-ssl-tcl.yaml' needs --dataset on the command line"):
        load_recipe("cpu-small-ssl-tcl").config()
    assert main(["compare", "--recipes", "cpu-small-ssl", "--methods", "tcl", "--out", str(tmp_path)]) == 2
    assert "needs --dataset" in capsys.readouterr().err
    assert load_recipe("cpu-small-ssl-tcl").config(dataset="elsewhere").data.dataset == "elsewhere"


def test_grouped_and_flat_recipe_files_give_the_same_configuration(tmp_path):
    """Recipe files written before the options were grouped (flat names, older spellings) still load."""
    (tmp_path / "flat.yaml").write_text(
        "method: moco\nsupervised: false\nepochs: 5\nknn_every_n_epochs: 2\neval_protocols: [knn]\n"
        "method_options: {queue_size: 512}\n"
    )
    (tmp_path / "grouped.yaml").write_text(
        "method:\n  name: moco\n  supervised: false\n  options: {queue_size: 512}\noptim:\n  epochs: 5\n"
        "eval:\n  knn_every: 2\n  protocols: [knn]\n"
    )
    flat, grouped = (load_recipe(tmp_path / f"{name}.yaml").config() for name in ("flat", "grouped"))
    assert flat.replace(recipe=None) == grouped.replace(recipe=None)
    assert (grouped.method.name, grouped.optim.epochs, grouped.eval.knn_every) == ("moco", 5, 2)


@pytest.mark.parametrize("name", ["paper-supervised-cifar10-supcon", "cpu-small-ssl-moco", "gpu-ssl-imagenet100-byol"])
def test_recipe_files_of_the_flat_format_give_the_packaged_configurations(name):
    """Copies of packaged recipes as they were written before the options were grouped
    (tests/data/recipes_v1, with their ``extends`` chains) load into the same configurations."""
    old = load_recipe(Path(__file__).parent / "data" / "recipes_v1" / f"{name}.yaml").config(dataset=CIFAR10)
    new = load_recipe(name).config(dataset=CIFAR10)
    assert old.replace(recipe=None) == new.replace(recipe=None)


def test_a_recipe_that_sets_what_its_parent_requires_needs_nothing_more(tmp_path):
    (tmp_path / "mine.yaml").write_text("extends: cpu-small-ssl-tcl\ndata: {dataset: elsewhere}\n")
    recipe = load_recipe(tmp_path / "mine.yaml")
    assert recipe.requires == () and recipe.config().data.dataset == "elsewhere"


@pytest.mark.parametrize(
    "content, message",
    [("extends: 3\n", "extends must be a recipe's name or path, got 3"), ("requires: [bogus]\n", "requires unknown")],
)
def test_a_recipe_s_own_entries_are_checked_naming_the_file(tmp_path, content, message):
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(ValueError, match=f"recipe .*bad.yaml.*{message}"):
        load_recipe(tmp_path / "bad.yaml")
