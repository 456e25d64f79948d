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
    _refused(capsys, ["pretrain", *QUICK, "--devices", "abc"], "argument --devices: devices must be a count >= 1, -1 (all), auto, or device")
