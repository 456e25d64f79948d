"""Every mistake of the user's is refused with a message that names it, never a traceback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import load_dataset
from tcl_ssl.runs import DatasetInfo, RunRecord

QUICK = [
    "--epochs",
    "1",
    "--limit-train-batches",
    "1",
    "--knn-every",
    "0",
    "--no-plots",
    "--protocols",
    "knn",
    "--batch-size",
    "8",
    "--knn-k",
    "3",
]


def _folder(root, classes=("a", "b"), per_class=8, channels=3):
    gen = torch.Generator().manual_seed(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_png(
                torch.randint(0, 256, (channels, 12, 12), dtype=torch.uint8, generator=gen),
                str(root / cls / f"{i}.png"),
            )
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCL_SSL_CACHE", str(tmp_path / "cache"))


def _refused(capsys, argv, message, code=2):
    """``tcl-ssl argv`` exits with ``code``, says ``message`` on stderr, and shows no traceback.

    A flag refused by the parser itself exits through argparse (``SystemExit(2)``)."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    assert status == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err, err
    return err


def _digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> hex digest): compared before and
    after a fault to show that nothing written before was damaged."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "nope"], "unknown method 'nope'; available: tcl, simclr"),
        (["--augmentation", "nope"], "unknown augmentation 'nope'; available: simclr"),
        (["--backbone", "nope"], "unknown backbone 'nope'; available: resnet18"),
        (["--stem", "nope"], "unknown stem 'nope'; available: imagenet"),
        (["--dataset", "nope"], "unknown dataset 'nope': use 'mnist5k'"),
        (["--image-size", "4"], "image_size must be an integer >= 8, got 4"),
        (["--num-nodes", "0"], "num_nodes must be an integer >= 1, got 0"),
        (["--accelerator", "cpu", "--sync-batchnorm"], "sync_batchnorm needs GPUs"),
        (["--batch-size", "100000"], "batch_size 100000 is larger than the train split (3600 images)"),
    ],
)
def test_unknown_names_and_impossible_sizes_are_refused(capsys, tmp_path, extra, message):
    _refused(capsys, ["pretrain", *QUICK, "--out", str(tmp_path / "run"), *extra], message)


def test_missing_empty_and_one_class_folders_are_refused(capsys, tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    one = _folder(tmp_path / "one", classes=("only",))
    out = ["--out", str(tmp_path / "run")]
    _refused(capsys, ["pretrain", *QUICK, *out, "--dataset", f"folder:{tmp_path / 'missing'}"], "does not exist")
    _refused(capsys, ["pretrain", *QUICK, *out, "--dataset", str(tmp_path / "empty")], "no images found in")
    _refused(capsys, ["pretrain", *QUICK, *out, "--dataset", str(one)], "has 1 class folder(s) ['only']: at least 2")


def test_a_corrupt_image_is_named_or_skipped_with_a_count(capsys, caplog, tmp_path):
    root = _folder(tmp_path / "images", per_class=10)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    argv = ["pretrain", *QUICK, "--out", str(tmp_path / "run"), "--dataset", str(root), "--image-size", "12"]
    _refused(capsys, argv, f"cannot decode image file {str(root / 'b' / 'broken.png')!r}")
    assert main([*argv, "--skip-bad-images"]) == 0
    assert (
        "skipped 1 of 21 image files that could not be decoded, e.g. " + str(root / "b" / "broken.png") in caplog.text
    )
    data = load_dataset(str(root), image_size=12, skip_bad_images=True)  # from the cache now
    assert (
        sum(data.sizes().values()) == 20
        and int((torch.cat([data.train.labels, data.val.labels, data.test.labels]) == 1).sum()) == 10
    )


def test_images_of_mixed_channels_are_converted_to_rgb(tmp_path):
    root = _folder(tmp_path / "images", classes=("rgb",), per_class=4)
    _folder(root, classes=("gray",), per_class=4, channels=1)
    from PIL import Image

    (root / "rgba").mkdir()
    for i, mode in enumerate(("RGBA", "P", "RGBA", "P")):  # with alpha, and with a palette
        Image.new(mode, (12, 12), color=40 * i).save(root / "rgba" / f"{i}.png")
    data = load_dataset(str(root), image_size=12, val_fraction=0.25, test_fraction=0.25)
    assert data.channels == 3 and sum(data.sizes().values()) == 12
    everything = torch.cat([data.train.images, data.val.images, data.test.images])
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    gray = everything[labels == 0]  # classes sorted: gray, rgb, rgba
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_there_is_refused(capsys, tmp_path):
    _refused(
        capsys,
        ["pretrain", *QUICK, "--out", str(tmp_path / "run"), "--accelerator", "gpu"],
        "accelerator 'gpu' asks for a CUDA GPU, but torch finds none",
    )


def test_an_output_directory_that_cannot_be_made_is_refused(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    _refused(
        capsys,
        ["pretrain", *QUICK, "--out", str(tmp_path / "a-file" / "run")],
        f"cannot create the run directory {str(tmp_path / 'a-file' / 'run')!r}: {str(tmp_path / 'a-file')!r} is a file",
    )


def test_an_unreadable_checkpoint_is_refused_when_the_run_is_resumed(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut off while written")
    dataset = DatasetInfo(train=3600, val=400, test=1000, classes=10, channels=1, image_size=28, mean=[0.1], std=[0.3])
    RunRecord(PretrainConfig.build(out=str(run), stem="imagenet"), run, dataset).write()
    _refused(
        capsys,
        ["pretrain", *QUICK, "--out", str(run)],
        f"cannot resume: checkpoint {str(run / 'checkpoints' / 'last.ckpt')!r} cannot be read",
    )


def test_devices_lightning_cannot_read_are_refused_before_any_data_is_loaded(capsys, monkeypatch):
    import tcl_ssl.train as train

    monkeypatch.setattr(train, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    _refused(capsys, ["pretrain", *QUICK, "--devices", "abc"], "devices must be a count (-1: all), auto, or device")


# ---- runs ----
# Run directories that cannot be confused (issue 19, items 3 and 5; data-loss cases (b) and (c)).
import json  # noqa: E402
import shutil  # noqa: E402

RUN_QUICK = [*QUICK, "--accelerator", "cpu", "--image-size", "12"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished TCL run of one step on 16 generated 12 px images (copy it before changing it)."""
    root = tmp_path_factory.mktemp("finished")
    images = _folder(root / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TCL_SSL_CACHE", str(root / "cache"))
        assert main(["pretrain", *RUN_QUICK, "--dataset", str(images), "--out", str(root / "run")]) == 0
    return root / "run"


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _fake_run(run: Path, checkpoint: bool = True, **options) -> Path:
    """A run directory with a config.json of ``options`` (and an unreadable last.ckpt): enough for
    the checks made before a checkpoint is read."""
    if checkpoint:
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"not read before the refusal")
    dataset = DatasetInfo(train=3600, val=400, test=1000, classes=10, channels=1, image_size=28, mean=[0.1], std=[0.3])
    config = PretrainConfig.build(out=str(run), stem="imagenet", precision="32-true", **options).resolved()
    RunRecord(config, run, dataset).write()
    return run


def test_a_run_directory_is_the_one_read_not_the_one_written_in_it(tmp_path):
    from tcl_ssl.runs import read_record

    _fake_run(tmp_path / "original", checkpoint=False)
    (tmp_path / "original").rename(tmp_path / "moved")
    assert read_record(tmp_path / "moved").run_dir == tmp_path / "moved"
    assert read_record(tmp_path / "moved" / "config.json").run_dir == tmp_path / "moved"


def test_a_copied_run_resumed_writes_only_in_the_copy(capsys, tmp_path, finished_run):
    from tcl_ssl.runs import read_record, read_summary

    copy = _copy_run(finished_run, tmp_path / "copy")
    before = _digests(finished_run)
    assert main(["pretrain", "--resume", str(copy), "--epochs", "2"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert _digests(finished_run) == before  # the original is untouched
    assert read_record(copy).resumes[-1]["changed"] == {"epochs": {"was": 1, "now": 2}}
    assert json.loads((copy / "config.json").read_text())["run_dir"] == str(copy)
    assert read_summary(copy).epochs == 2 and (copy / "logs" / "version_1" / "metrics.csv").is_file()


def test_a_copied_run_resumed_through_the_library_continues_in_the_copy(tmp_path, finished_run, monkeypatch):
    from tcl_ssl.runs import read_record, read_summary
    from tcl_ssl.train import pretrain

    monkeypatch.chdir(tmp_path)
    copy = _copy_run(finished_run, tmp_path / "copy")
    before = _digests(finished_run)
    assert read_record(copy).config.run.out == str(copy)  # not the original's, written in the file
    summary = pretrain(read_record(copy).config.replace(resume=str(copy), out=None, epochs=2))
    assert summary is not None and Path(summary.run_dir).resolve() == copy
    assert read_summary(copy).epochs == 2 and _digests(finished_run) == before
    assert not (tmp_path / "runs").exists()  # no new directory beside it


def test_a_finished_runs_out_reused_with_another_method_is_refused(capsys, tmp_path, finished_run):
    """Issue 19, data loss (b): the run's config.json was rewritten with the other method."""
    run = _copy_run(finished_run, tmp_path / "run")
    before = _digests(run)
    _refused(
        capsys,
        ["pretrain", *RUN_QUICK, "--out", str(run), "--method", "simclr"],
        f"{run} holds a run of another configuration (method: 'tcl' there, 'simclr' given): a resume keeps the run's "
        "data, backbone, stem, method and supervised; start a new run (without --resume) with another --out, "
        f"or delete {run}",
    )
    assert _digests(run) == before
    assert main(["export", str(run), "--out", str(tmp_path / "backbone.pt")]) == 0
    assert torch.load(tmp_path / "backbone.pt", weights_only=True)["method"] == "tcl"


@pytest.mark.parametrize(
    "given,message",
    [
        (["--backbone", "resnet34"], "backbone: 'resnet18' there, 'resnet34' given"),
        (["--stem", "small"], "stem: 'imagenet' there, 'small' given"),
        (["--supervised"], "supervised: False there, True given"),
        (["--dataset", "cifar10"], "dataset: 'mnist5k' there, 'cifar10' given"),
    ],
)
def test_a_resume_that_changes_what_the_run_is_is_refused(capsys, tmp_path, given, message):
    run = _fake_run(tmp_path / "run")
    before = _digests(run)
    _refused(capsys, ["pretrain", "--resume", str(run), *given], message)
    _refused(capsys, ["pretrain", "--out", str(run), *given], message)
    assert _digests(run) == before


def test_a_new_run_in_a_directory_of_another_configuration_is_refused(capsys, tmp_path):
    run = _fake_run(tmp_path / "run", checkpoint=False, method="simclr")
    before = _digests(run)
    _refused(
        capsys,
        ["pretrain", *QUICK, "--out", str(run)],
        f"{run} holds a run of another configuration (method: 'simclr' there, 'tcl' planned",
    )
    assert _digests(run) == before


def test_a_resume_into_an_out_that_holds_another_run_is_refused(capsys, tmp_path, finished_run):
    other = _fake_run(tmp_path / "other", method="simclr")
    before = _digests(other)
    _refused(
        capsys,
        ["pretrain", "--resume", str(finished_run), "--out", str(other)],
        f"{other} already holds a run, and resuming {finished_run} there would overwrite it",
    )
    assert _digests(other) == before


def test_a_new_library_run_over_a_checkpoint_is_refused(tmp_path):
    from tcl_ssl.train import pretrain

    run = _fake_run(tmp_path / "run")
    before = _digests(run)
    with pytest.raises(ValueError, match="holds a checkpoint .* that a new run would overwrite; resume it"):
        pretrain(PretrainConfig.build(out=str(run), stem="imagenet", precision="32-true"))
    assert _digests(run) == before


def test_eval_never_merges_figures_of_different_weights(capsys, tmp_path, finished_run):
    """Issue 19, silently wrong: eval.json keyed by the checkpoint's path merged the kNN figures of
    the weights before a resume with the linear figures of the weights after it."""
    run = _copy_run(finished_run, tmp_path / "run")
    assert main(["eval", str(run), "--protocols", "knn", "--no-plots"]) == 0
    assert main(["pretrain", "--resume", str(run), "--epochs", "2"]) == 0
    assert main(["eval", str(run), "--protocols", "linear", "--no-plots"]) == 0
    entries = json.loads((run / "eval.json").read_text())["entries"]
    first, second = entries.values()
    assert first["weights_sha256"] != second["weights_sha256"] and first["step"] < second["step"]
    assert (first["protocols"], sorted(first["test"])) == (["knn"], ["knn_top1", "knn_top5"])
    assert (second["protocols"], sorted(second["test"])) == (["linear"], ["linear_top1", "linear_top5"])
    assert main(["eval", str(run), "--protocols", "knn", "--no-plots"]) == 0  # the same weights: one entry
    entries = json.loads((run / "eval.json").read_text())["entries"]
    assert len(entries) == 2 and entries[f"{second['dataset']}@{second['weights_sha256'][:16]}"]["protocols"] == [
        "linear",
        "knn",
    ]
    assert "Traceback" not in capsys.readouterr().err


def test_eval_keeps_the_entries_of_an_eval_json_of_version_1_apart(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    dataset = json.loads((run / "config.json").read_text())["config"]["data"]["dataset"]
    old = {"dataset": dataset, "checkpoint": "x", "protocols": ["knn"], "val": {}, "test": {"knn_top1": 1.0}}
    (run / "eval.json").write_text(json.dumps({dataset: old}))
    assert main(["eval", str(run), "--protocols", "knn", "--no-plots"]) == 0
    entries = json.loads((run / "eval.json").read_text())["entries"]
    assert entries[f"{dataset}@unknown-weights"]["test"] == {"knn_top1": 1.0} and len(entries) == 2


@pytest.mark.parametrize("content", ["", '{"format": "tcl-ssl-eval", "version": 2, "entries": [1]}', "[]"])
def test_a_damaged_eval_json_is_named_before_any_work(capsys, tmp_path, finished_run, content):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "eval.json").write_text(content)
    before = _digests(run)
    err = _refused(
        capsys,
        ["eval", str(run), "--protocols", "knn", "--no-plots"],
        "move it away or delete it, and tcl-ssl eval writes a new one",
    )
    assert str(run / "eval.json") in err
    assert _digests(run) == before


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: "", "config.json is not valid JSON"),
        (lambda c: "{}", "config.json is not a run's config.json"),
        (lambda c: json.dumps(c | {"config": "x"}), "config.json is not a run's config.json: its 'config' must be"),
        (lambda c: json.dumps(c | {"dataset": []}), "config.json is not a run's config.json: its 'dataset' must be"),
        (
            lambda c: json.dumps(c | {"dataset": c["dataset"] | {"channels": "three"}}),
            "dataset.channels must be an integer >= 0, got 'three'",
        ),
    ],
)
@pytest.mark.parametrize("command", ["eval", "export"])
def test_an_empty_or_malformed_config_json_is_named(capsys, tmp_path, finished_run, change, message, command):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "config.json").write_text(change(json.loads((run / "config.json").read_text())))
    before = _digests(run)
    argv = ["eval", str(run), "--no-plots"] if command == "eval" else ["export", str(run), "--out", str(tmp_path / "b")]
    err = _refused(capsys, argv, message)
    assert str(run / "config.json") in err
    assert _digests(run) == before and not (tmp_path / "b").exists()
