"""Every mistake of the user's is refused with a message that names it, never a traceback."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from tcl_ssl.cli import main
from tcl_ssl.config import PretrainConfig
from tcl_ssl.data import load_dataset
from tcl_ssl.runs import DatasetInfo, RunRecord
from tests.test_safe_io import damage_inside_a_tensor, full_disk

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
    _refused(
        capsys,
        ["pretrain", *QUICK, "--devices", "abc"],
        "argument --devices: devices must be a count >= 1, -1 (all), auto, or device",
    )


# ---- writes ----
# Files written whole (tcl_ssl.safe_io) and read only when whole: a full disk, the file size limit,
# a damaged checkpoint or export, a damaged image cache.


@pytest.fixture(scope="module")
def _trained(tmp_path_factory):
    """A finished 1-epoch run on 20 tiny images (its own cache directory): copied by each test."""
    root = tmp_path_factory.mktemp("trained")
    images = _folder(root / "images", per_class=10)
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TCL_SSL_CACHE", str(root / "cache"))
        argv = ["pretrain", *QUICK, "--dataset", str(images), "--image-size", "12", "--out", str(run)]
        assert main(argv) == 0
    return run


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_a_full_disk_while_exporting_keeps_the_backbone_that_was_there(capsys, tmp_path, monkeypatch, _trained):
    out = tmp_path / "exports" / "backbone.pt"
    assert main(["export", str(_trained), "--out", str(out)]) == 0
    before = _digests(tmp_path / "exports")
    full_disk(monkeypatch, name="backbone.pt", after=1 << 20)  # the disk fills 1 MiB into the write
    _refused(
        capsys,
        ["export", str(_trained), "--out", str(out)],
        f"cannot write 'backbone.pt' in {str(out.parent)!r}: No space left on device",
        code=1,
    )
    assert _digests(tmp_path / "exports") == before  # no temporary file left either


def test_the_file_size_limit_while_exporting_keeps_the_backbone_that_was_there(tmp_path, _trained):
    out = tmp_path / "backbone.pt"
    out.write_bytes(b"a good backbone, small enough")
    before = _digests(tmp_path)
    script = (
        "import resource, sys\n"
        "from tcl_ssl.cli import main\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        f"sys.exit(main(['export', {str(_trained)!r}, '--out', {str(out)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # before: torch's RuntimeError, and the file cut at 1 MiB
    assert f"cannot write 'backbone.pt' in {str(tmp_path)!r}: File too large" in done.stderr
    assert "Traceback" not in done.stderr
    assert _digests(tmp_path) == before


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(capsys, tmp_path, monkeypatch, _trained):
    run = _copy_run(_trained, tmp_path)
    before = _digests(run / "checkpoints") | {"summary.json": _digests(run)["summary.json"]}
    full_disk(monkeypatch, name="last.ckpt", after=1 << 20)
    _refused(
        capsys,
        ["pretrain", "--resume", str(run), "--out", str(run), "--epochs", "2"],
        f"cannot write 'last.ckpt' in {str(run / 'checkpoints')!r}: No space left on device",
        code=1,
    )
    assert _digests(run / "checkpoints") | {"summary.json": _digests(run)["summary.json"]} == before


def test_a_full_disk_while_writing_the_summary_keeps_the_previous_summary(capsys, tmp_path, monkeypatch, _trained):
    run = _copy_run(_trained, tmp_path)
    before = _digests(run)["summary.json"]
    full_disk(monkeypatch, name="summary.json")
    _refused(
        capsys,
        ["pretrain", "--resume", str(run), "--out", str(run), "--epochs", "2"],
        f"cannot write 'summary.json' in {str(run)!r}: No space left on device",
        code=1,
    )
    assert _digests(run)["summary.json"] == before
    assert not [p for p in run.iterdir() if p.name.endswith(".partial")]


def test_a_full_disk_while_caching_images_warns_and_goes_on(caplog, tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", per_class=10)
    cache = tmp_path / "cache"  # TCL_SSL_CACHE (the autouse fixture)
    (cache / "keep").mkdir(parents=True)
    (cache / "keep" / "other-entry.pt").write_bytes(b"written before")
    before = _digests(cache)
    full_disk(monkeypatch, name="folder-")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(str(root), image_size=12)
    assert sum(data.sizes().values()) == 20
    assert f"in {str(cache)!r}: No space left on device; going on with the images in memory" in caplog.text
    assert _digests(cache) == before  # no entry, no temporary file


def _cached_entry(cache: Path) -> Path:
    (entry,) = cache.glob("folder-*.pt")
    return entry


@pytest.mark.parametrize("damage", ["inside a tensor", "truncated", "text"])
def test_a_damaged_image_cache_entry_is_deleted_and_rebuilt_with_a_warning(caplog, tmp_path, damage):
    root = _folder(tmp_path / "images", per_class=10)
    cache = tmp_path / "cache"  # TCL_SSL_CACHE (the autouse fixture)
    first = load_dataset(str(root), image_size=12)
    entry = _cached_entry(cache)
    good = entry.read_bytes()
    if damage == "inside a tensor":
        damage_inside_a_tensor(entry)
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    else:
        entry.write_text("checkpoint corrupted")
    with caplog.at_level(logging.WARNING):
        again = load_dataset(str(root), image_size=12)
    assert f"the image cache file {str(entry)!r} is damaged" in caplog.text
    assert "deleted it; decoding the images again" in caplog.text
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.labels, first.test.labels)
    assert entry.read_bytes() == good  # rebuilt, the same bytes as first written


def test_a_checkpoint_damaged_inside_a_tensor_is_refused_on_resume(capsys, tmp_path, _trained):
    run = _copy_run(_trained, tmp_path)
    checkpoint = run / "checkpoints" / "last.ckpt"
    entry = damage_inside_a_tensor(checkpoint)
    before = _digests(run)
    _refused(
        capsys,
        ["pretrain", "--resume", str(run), "--out", str(run), "--epochs", "2"],
        f"cannot resume: checkpoint {str(checkpoint)!r} cannot be read: it is damaged: its entry {entry!r} "
        "does not match the checksum it was written with; resume from an earlier checkpoint",
    )
    assert _digests(run) == before


def test_a_damaged_checkpoint_is_refused_by_eval_and_export(capsys, tmp_path, _trained):
    run = _copy_run(_trained, tmp_path)
    checkpoint = run / "checkpoints" / "last.ckpt"
    damage_inside_a_tensor(checkpoint)
    before = _digests(run)
    message = f"{str(checkpoint)!r} is damaged: its entry"
    _refused(capsys, ["eval", str(run), "--protocols", "knn", "--no-plots"], message)
    _refused(capsys, ["export", str(run), "--out", str(tmp_path / "backbone.pt")], message)
    assert _digests(run) == before and not (tmp_path / "backbone.pt").exists()


def test_load_backbone_names_a_truncated_export_or_a_text_file(tmp_path, _trained):
    from tcl_ssl.export import export_backbone, load_backbone
    from tcl_ssl.safe_io import DamagedFileError

    good = export_backbone(_trained, tmp_path / "backbone.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "backbone.txt"
    text.write_text("resnet18 weights, honest")
    with pytest.raises(DamagedFileError, match=f"'{cut}' is damaged or not a torch file .*; export it again"):
        load_backbone(cut)
    with pytest.raises(ValueError, match=f"'{text}' is not a backbone exported by tcl-ssl export"):
        load_backbone(text)
    assert load_backbone(good).feature_dim == 512


def test_an_export_into_a_directory_that_cannot_be_made_is_refused(capsys, tmp_path, _trained):
    (tmp_path / "a-file").write_text("")
    _refused(
        capsys,
        ["export", str(_trained), "--out", str(tmp_path / "a-file" / "backbone.pt")],
        f"cannot write 'backbone.pt' in {str(tmp_path / 'a-file')!r}: ",
        code=1,
    )


def test_a_full_disk_while_writing_eval_json_keeps_the_previous_one(capsys, tmp_path, monkeypatch, _trained):
    run = _copy_run(_trained, tmp_path)
    argv = ["eval", str(run), "--protocols", "knn", "--no-plots"]
    assert main(argv) == 0
    before = _digests(run)
    full_disk(monkeypatch, name="eval.json")
    _refused(capsys, argv, f"cannot write 'eval.json' in {str(run)!r}: No space left on device", code=1)
    assert _digests(run) == before


@pytest.mark.parametrize("command", ["resume", "eval", "export"])
def test_a_torch_file_that_is_not_a_checkpoint_is_refused_by_name(capsys, tmp_path, _trained, command):
    run = _copy_run(_trained, tmp_path)
    checkpoint = run / "checkpoints" / "last.ckpt"
    torch.save({"foo": 1}, checkpoint)  # whole, but not Lightning's (before: KeyError 'state_dict' or Lightning's)
    before = _digests(run)
    argv = {
        "resume": ["pretrain", "--resume", str(run), "--out", str(run), "--epochs", "2"],
        "eval": ["eval", str(run), "--protocols", "knn", "--no-plots"],
        "export": ["export", str(run), "--out", str(tmp_path / "backbone.pt")],
    }[command]
    problem = "is not a checkpoint written by tcl-ssl pretrain (it lacks 'state_dict', 'pytorch-lightning_version', "
    if command == "resume":
        message = f"cannot resume: checkpoint {str(checkpoint)!r} cannot be read: it {problem}"
        advice = "; resume from an earlier checkpoint, or delete it (or give another --out) to start over"
    else:
        message = f"{str(checkpoint)!r} {problem}"
        advice = "; the run's checkpoint is damaged: resume the run (tcl-ssl pretrain --resume RUN)"
    err = _refused(capsys, argv, message)
    assert advice in err and (command == "resume") == ("earlier checkpoint" in err)
    assert _digests(run) == before and not (tmp_path / "backbone.pt").exists()


# ---- images ----
# Image folders: every listed format decodes, every mode like PIL's convert (tests/test_decode.py
# holds the per-mode PIL-oracle tests), and entries that cannot be images are named or skipped.


def _pil_folder(root: Path, files: dict[str, str], seed: int = 0) -> Path:
    """Class folders ``a`` and ``b`` with 8 random 12 px RGB PNGs each, plus ``files`` (relative
    name -> PIL mode) written with PIL in the format of the name's extension."""
    import numpy as np
    from PIL import Image

    _folder(root, per_class=8)
    rng = np.random.default_rng(seed)
    for name, mode in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65536, (12, 12), dtype=np.uint16))
        else:
            image = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert(mode)
        image.save(root / name)
    return root


def _all_images(data) -> torch.Tensor:
    return torch.cat([data.train.images, data.val.images, data.test.images])


def test_images_every_listed_extension_decodes(tmp_path):
    from tcl_ssl.data import IMAGE_EXTENSIONS

    extensions = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"]
    assert sorted(IMAGE_EXTENSIONS) == sorted(extensions)
    modes = {".pgm": "L", ".gif": "P"}
    root = _pil_folder(tmp_path / "images", {f"c/x{ext}": modes.get(ext, "RGB") for ext in extensions})
    data = load_dataset(str(root), image_size=12, source="memory", val_fraction=0.25, test_fraction=0.25)
    assert sum(data.sizes().values()) == 16 + len(extensions) and data.num_classes == 3


def test_images_sixteen_bit_pngs_are_clipped_alike_in_memory_and_streamed(tmp_path, caplog):
    from tcl_ssl.data import batch_loader

    root = _pil_folder(tmp_path / "images", {f"c/{i}.png": "I;16" for i in range(10)})
    memory = load_dataset(str(root), image_size=12, source="memory", val_fraction=0.25, test_fraction=0.25)
    stream = load_dataset(str(root), image_size=12, source="stream", val_fraction=0.25, test_fraction=0.25, workers=0)
    for split in ("train", "val", "test"):
        streamed = torch.cat(
            [images for images, _ in batch_loader(stream.split(split), 64, shuffle=False, drop_last=False)]
        )
        assert streamed.dtype == torch.uint8 and torch.equal(streamed, memory.split(split).images)
    gray = _all_images(memory)[torch.cat([memory.train.labels, memory.val.labels, memory.test.labels]) == 2]
    assert (gray == 255).float().mean() > 0.9  # values >= 255 of 0..65535 clipped, not taken modulo 256


def test_images_animated_gif_gives_its_first_frame(capsys, tmp_path):
    from PIL import Image

    root = _folder(tmp_path / "images", per_class=8)
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(root / "a" / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    data = load_dataset(str(root), image_size=12, source="memory", val_fraction=0.25, test_fraction=0.25)
    assert sum(data.sizes().values()) == 17
    red = (_all_images(data)[:, 0] > 200).flatten(1).all(1) & (_all_images(data)[:, 1] < 50).flatten(1).all(1)
    assert int(red.sum()) == 1


def _bad_entry(root: Path, kind: str) -> Path:
    """A bad entry of ``kind`` in class folder ``b``; returns its path."""
    import os

    path = root / "b" / f"{kind}.png"
    if kind == "dangling":
        path.symlink_to(root / "b" / "gone.png")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "dirloop":
        path.symlink_to(root / "b", target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("dangling", "dangling symbolic link to"),
        ("loop", "symbolic link loop"),
        ("dirloop", "symbolic link loop (a link to a folder above it)"),
        ("fifo", "not a regular file (a FIFO)"),
    ],
)
def test_images_links_and_fifos_are_named_or_skipped(capsys, caplog, tmp_path, kind, reason):
    root = _folder(tmp_path / "images", per_class=8)
    bad = _bad_entry(root, kind)
    before = _digests(root)
    argv = ["pretrain", *QUICK, "--out", str(tmp_path / "run"), "--dataset", str(root), "--image-size", "12"]
    _refused(capsys, argv, f"1 entry under {str(root)!r} cannot be read as image files, e.g. {str(bad)!r} ({reason}")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.ckpt"))
    data = load_dataset(str(root), image_size=12, skip_bad_images=True, val_fraction=0.25, test_fraction=0.25)
    assert sum(data.sizes().values()) == 16
    assert f"skipped 1 entries under {root} that cannot be read as image files, e.g. {bad}" in caplog.text
    assert _digests(root) == before


def test_images_an_unreadable_file_is_named_or_skipped(capsys, caplog, tmp_path, monkeypatch):
    import builtins

    from tcl_ssl.data import decode

    root = _folder(tmp_path / "images", per_class=8)
    locked = root / "a" / "2.png"

    def guarded_open(path, *args, **kwargs):  # the test runs as root, for whom chmod 000 does not lock
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(decode, "open", guarded_open, raising=False)
    argv = ["pretrain", *QUICK, "--out", str(tmp_path / "run"), "--dataset", str(root), "--image-size", "12"]
    _refused(capsys, argv, f"cannot read image file {str(locked)!r} (Permission denied)")
    data = load_dataset(str(root), image_size=12, skip_bad_images=True, val_fraction=0.25, test_fraction=0.25)
    assert sum(data.sizes().values()) == 15
    assert f"skipped 1 of 16 image files that could not be decoded, e.g. {locked}" in caplog.text


@pytest.mark.parametrize("source", ["memory", "stream"])
def test_images_file_and_class_names_that_are_not_utf8_are_read(tmp_path, source):
    import os

    from torchvision.io import encode_png

    root = _folder(tmp_path / "images", per_class=8)
    png = encode_png(torch.full((3, 12, 12), 7, dtype=torch.uint8)).numpy().tobytes()
    odd_class = os.fsencode(root) + b"/caf\xe9"  # Latin-1, not UTF-8
    os.mkdir(odd_class)
    for i in range(8):
        with open(odd_class + b"/\xff\xfe" + str(i).encode() + b".png", "wb") as file:
            file.write(png)
    data = load_dataset(str(root), image_size=12, source=source, workers=0, val_fraction=0.25, test_fraction=0.25)
    assert sum(data.sizes().values()) == 24 and data.num_classes == 3
    again = load_dataset(
        str(root), image_size=12, source=source, workers=0, val_fraction=0.25, test_fraction=0.25
    )  # cached
    assert again.sizes() == data.sizes()


def test_images_empty_class_folders_are_refused_by_name(capsys, tmp_path):
    root = _folder(tmp_path / "images", per_class=8)
    (root / "c").mkdir()
    (root / "d").mkdir()
    (root / "d" / "notes.txt").write_text("not an image")
    argv = ["pretrain", *QUICK, "--out", str(tmp_path / "run"), "--dataset", str(root)]
    _refused(capsys, argv, f"class folder(s) ['c', 'd'] of {str(root)!r} hold no image files")
    assert not (tmp_path / "run").exists()


def test_images_an_out_inside_the_dataset_is_refused_before_writing(capsys, tmp_path):
    root = _folder(tmp_path / "images", per_class=8)
    before = _digests(root)
    for out in (root / "runs" / "one", root / "a" / "run", root):
        _refused(
            capsys,
            ["pretrain", *QUICK, "--out", str(out), "--dataset", f"folder:{root}"],
            f"the run directory (--out) {str(out)!r} is inside the dataset folder {str(root.resolve())!r}",
        )
    assert _digests(root) == before and not (root / "runs").exists() and not (root / "a" / "run").exists()


# ---- door ----
# Every configuration value is checked at the door, by its declaration (tcl_ssl.config.schema):
# on the command line at parse (argparse's exit 2, naming the flag), in a recipe file at load
# (naming the file), in PretrainConfig.build()/replace() for API users; and the loss API refuses
# what it cannot compute.

_ALLOWED_DEVICES = "a count >= 1, -1 (all), auto, or device indices such as 0,1 or [0, 1]"
_ALLOWED_LIMIT = "a number of batches (an integer >= 1) or a fraction of the epoch in (0, 1]"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--devices", "abc"], f"argument --devices: devices must be {_ALLOWED_DEVICES}; got 'abc'"),
        (["--devices", "0"], f"argument --devices: devices must be {_ALLOWED_DEVICES}; got 0"),
        (["--devices", "-2"], f"argument --devices: devices must be {_ALLOWED_DEVICES}; got -2"),
        (["--devices", "0,0"], f"argument --devices: devices must be {_ALLOWED_DEVICES}; got '0,0'"),
        (["--precision", "17"], "argument --precision: precision must be one of 32-true, 16-mixed, bf16-mixed"),
        (["--accelerator", "tpux"], "argument --accelerator: accelerator must be one of auto, cpu, gpu, cuda"),
        (["--strategy", "dpp"], "argument --strategy: strategy must be one of auto, ddp, ddp_spawn"),
        (["--protocols", "knn,nope"], "argument --protocols: protocols must be a non-empty subset of knn, linear"),
        (["--protocols", ""], "argument --protocols: protocols must be a non-empty subset of knn, linear"),
        (
            ["--limit-train-batches", "0"],
            f"argument --limit-train-batches: limit_train_batches must be {_ALLOWED_LIMIT}",
        ),
        (["--limit-train-batches", "1.5"], f"limit_train_batches must be {_ALLOWED_LIMIT}; got 1.5"),
        (["--limit-train-batches", "abc"], f"limit_train_batches must be {_ALLOWED_LIMIT}; got 'abc'"),
        (["--seed", "-1"], "argument --seed: seed must be an integer >= 0, got -1"),
        (["--seed", str(2**32)], "argument --seed: seed must be an integer <= 4294967295, got 4294967296"),
        (["--val-fraction", "1.0"], "argument --val-fraction: val_fraction must be a number in (0, 1); got 1.0"),
        (["--test-fraction", "1.5"], "argument --test-fraction: test_fraction must be a number in (0, 1); got 1.5"),
        (["--epochs", "1.5"], "argument --epochs: epochs must be an integer, got '1.5'"),
        (["--knn-temperature", "nan"], "argument --knn-temperature: knn_temperature must be a number, got nan"),
        (["--lr", "0"], "argument --lr: lr must be a number > 0, got 0"),
    ],
)
def test_door_a_flag_value_not_allowed_is_refused_at_parse_naming_flag_value_and_what_is_allowed(
    capsys, tmp_path, extra, message
):
    out = tmp_path / "run"
    _refused(capsys, ["pretrain", *QUICK, "--out", str(out), *extra], message)
    assert not out.exists()  # refused before anything was made


@pytest.mark.parametrize(
    "text,value",
    [("1", 1), ("3", 3), ("0.25", 0.25), ("1.0", 1.0)],
)
def test_door_limit_train_batches_an_int_counts_batches_a_float_is_a_fraction(text, value):
    from tcl_ssl.cli import build_parser
    from tcl_ssl.cli.options import given_options

    given = given_options(build_parser().parse_args(["pretrain", "--limit-train-batches", text]))
    assert given == {"limit_train_batches": value} and type(given["limit_train_batches"]) is type(value)


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ('supervised: "no"\n', "supervised must be true or false, got 'no'"),
        ("supervised: no\n", "supervised must be true or false, got 'no'"),  # YAML 1.1 read it as false
        ("supervised: yes\n", "supervised must be true or false, got 'yes'"),  # YAML 1.1 read it as true
        ("plots: off\n", "plots must be true or false, got 'off'"),
        ('lr: "0.1"\n', "lr must be a number or null, got '0.1'"),
        ('epochs: "3"\n', "epochs must be an integer, got '3'"),
        ("optim: {lr: x}\n", "lr must be a number or null, got 'x'"),
        ("knn_k: 3.0\n", "knn_k must be an integer, got 3.0"),
        ("seed: 1:30\n", "seed must be an integer, got '1:30'"),  # YAML 1.1 read it as 90
        ("devices: abc\n", f"devices must be {_ALLOWED_DEVICES}; got 'abc'"),
        ("precision: 17\n", "precision must be one of 32-true, 16-mixed"),
        ("protocols: [knn, nope]\n", "protocols must be a non-empty subset of knn, linear, linear-aug, retrieval"),
        ("limit_train_batches: 5.5\n", f"limit_train_batches must be {_ALLOWED_LIMIT}; got 5.5"),
        ("val_fraction: 1\n", "val_fraction must be a number in (0, 1); got 1"),
    ],
)
def test_door_a_recipe_value_of_the_wrong_type_is_refused_at_load_naming_file_key_value(
    capsys, tmp_path, yaml_text, message
):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text)
    out = tmp_path / "run"
    err = _refused(capsys, ["pretrain", "--config", str(recipe), "--out", str(out)], message)
    assert f"recipe {str(recipe)!r}" in err and not out.exists()


def test_door_a_bad_value_in_a_parent_recipe_names_the_parent_file(capsys, tmp_path):
    (tmp_path / "parent.yaml").write_text("supervised: yes\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nepochs: 2\n")
    err = _refused(capsys, ["pretrain", "--config", str(tmp_path / "child.yaml")], "supervised must be true or false")
    assert f"recipe {str(tmp_path / 'parent.yaml')!r}" in err


@pytest.mark.parametrize(
    "yaml_text,key,value",
    [
        ("lr: 1e-4\n", "lr", 1e-4),  # YAML 1.1 left 1e-4 a text
        ("epochs: 010\n", "epochs", 10),  # YAML 1.1 read it as octal 8
        ("supervised: true\n", "supervised", True),
        ("plots: False\n", "plots", False),
    ],
)
def test_door_recipes_are_read_with_yaml_1_2_types(tmp_path, yaml_text, key, value):
    from tcl_ssl.config.recipes import load_recipe

    (tmp_path / "r.yaml").write_text(yaml_text)
    got = load_recipe(tmp_path / "r.yaml").config().get(key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"supervised": "no"}, "supervised must be true or false, got 'no'"),
        ({"devices": "abc"}, f"devices must be {_ALLOWED_DEVICES}; got 'abc'"),
        ({"lr": True}, "lr must be a number or null, got True"),
        ({"limit_train_batches": 0}, f"limit_train_batches must be {_ALLOWED_LIMIT}; got 0"),
    ],
)
def test_door_build_and_replace_check_values(change, message):
    import re

    from tcl_ssl.config import ConfigError

    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        PretrainConfig.build(**change)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        PretrainConfig().replace(**change)


def test_door_build_takes_numpy_numbers_and_paths():
    import numpy as np

    config = PretrainConfig.build(seed=np.int64(3), lr=np.float32(0.5), out=Path("runs") / "a")
    assert (config.run.seed, config.optim.lr, config.run.out) == (3, 0.5, str(Path("runs") / "a"))
    assert type(config.run.seed) is int and type(config.optim.lr) is float


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--protocols", "nope"], "argument --protocols: protocols must be a non-empty subset of knn, linear"),
        (["--accelerator", "tpux"], "argument --accelerator: accelerator must be one of auto, cpu, gpu"),
        (["--knn-temperature", "-1"], "argument --knn-temperature: knn_temperature must be a number > 0, got -1"),
        (["--knn-k", "0"], "argument --knn-k: knn_k must be an integer >= 1, got 0"),
        (["--linear-aug-epochs", "0"], "argument --linear-aug-epochs: linear_aug_epochs must be an integer >= 1"),
        (
            ["--linear-aug-batch-size", "0"],
            "argument --linear-aug-batch-size: linear_aug_batch_size must be an integer >= 1, got 0",
        ),
        (
            ["--linear-aug-batch-size", "x"],
            "argument --linear-aug-batch-size: linear_aug_batch_size must be an integer, got 'x'",
        ),
    ],
)
def test_door_eval_flags_are_checked_by_the_same_declarations(capsys, tmp_path, extra, message):
    _refused(capsys, ["eval", str(tmp_path / "no-run"), *extra], message)


# -- door: the loss API --


def _loss_cases():
    import numpy as np

    from tcl_ssl.loss import TCLLoss, tcl_loss
    from tcl_ssl.memory_bank import LabeledMemoryBank
    from tcl_ssl.pml import TCLPMLLoss

    x, g = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    meta = torch.empty(4, 8, device="meta")
    empty, no_ids = torch.empty(0, 8), torch.empty(0, dtype=torch.long)
    return {
        "tcl_loss empty batch": (lambda: tcl_loss(empty, no_ids), "embeddings is an empty batch (shape (0, 8))"),
        "TCLLoss empty batch": (lambda: TCLLoss()(empty, empty), "view 0 is an empty batch (shape (0, 8))"),
        "TCLPMLLoss empty batch": (lambda: TCLPMLLoss()(empty, no_ids), "embeddings is an empty batch"),
        "tcl_loss zero-width": (lambda: tcl_loss(torch.empty(4, 0), g), "embeddings has zero-width embeddings"),
        "TCLLoss zero-width": (lambda: TCLLoss()(torch.empty(4, 0), torch.empty(4, 0)), "view 0 has zero-width"),
        "TCLPMLLoss zero-width": (lambda: TCLPMLLoss()(torch.empty(4, 0), g), "embeddings has zero-width"),
        "tcl_loss meta": (lambda: tcl_loss(meta, g.to("meta")), "embeddings is on the meta device (no data)"),
        "TCLLoss meta views": (lambda: TCLLoss()(meta, meta), "view 0 is on the meta device (no data)"),
        "TCLLoss one view on meta": (lambda: TCLLoss()(x, meta), "view 1 is on the meta device"),
        "TCLLoss labels on meta": (lambda: TCLLoss()(x, x, labels=g.to("meta")), "labels is on the meta device"),
        "tcl_loss groups on meta": (lambda: tcl_loss(x, g.to("meta")), "groups is on the meta device"),
        "TCLPMLLoss meta": (lambda: TCLPMLLoss()(meta, g), "embeddings is on the meta device"),
        "TCLPMLLoss labels on meta": (lambda: TCLPMLLoss()(x, g.to("meta")), "labels is on the meta device"),
        "TCLLoss float labels": (lambda: TCLLoss()(x, x, labels=g.float()), "labels must be an integer tensor"),
        "TCLLoss bool labels": (lambda: TCLLoss()(x, x, labels=g.bool()), "labels must be an integer tensor"),
        "TCLPMLLoss float labels": (lambda: TCLPMLLoss()(x, g.float() + 0.5), "labels must be an integer tensor"),
        "TCLLoss(temperature=True)": (lambda: TCLLoss(temperature=True), "temperature must be a finite number > 0"),
        "TCLLoss(k1=False)": (lambda: TCLLoss(k1=False), "k1 must be a finite number >= 0"),
        "TCLLoss(k2=np.True_)": (lambda: TCLLoss(k2=np.bool_(True)), "k2 must be a finite number > 0"),
        "TCLLoss(temperature='0.1')": (lambda: TCLLoss(temperature="0.1"), "temperature must be a finite number"),
        "TCLLoss(temperature=None)": (lambda: TCLLoss(temperature=None), "temperature must be a finite number"),
        "TCLLoss(k1=tensor)": (lambda: TCLLoss(k1=torch.tensor(3.0)), "k1 must be a finite number >= 0"),
        "tcl_loss(temperature=True)": (lambda: tcl_loss(x, g, temperature=True), "temperature must be a finite"),
        "TCLPMLLoss(temperature=True)": (lambda: TCLPMLLoss(temperature=True), "temperature must be a finite"),
        "TCLLoss(gather_distributed='no')": (lambda: TCLLoss(gather_distributed="no"), "gather_distributed must be"),
        "TCLLoss(check_inputs='no')": (lambda: TCLLoss(check_inputs="no"), "check_inputs must be True or False"),
        "tcl_loss(normalize='no')": (lambda: tcl_loss(x, g, normalize="no"), "normalize must be True or False"),
        "tcl_loss anchor_weights (3,)": (
            lambda: tcl_loss(x, g, anchor_weights=torch.ones(3)),
            "anchor_weights must be a floating (4,) tensor",
        ),
        "TCLLoss(memory_bank_size=8.0)": (lambda: TCLLoss(memory_bank_size=8.0), "memory_bank_size must be 0, an int"),
        "TCLLoss(memory_bank_size=True)": (lambda: TCLLoss(memory_bank_size=True), "memory_bank_size must be 0"),
        "LabeledMemoryBank(True)": (lambda: LabeledMemoryBank(True), "memory bank size must be an integer >= 1"),
        "LabeledMemoryBank(4.5)": (lambda: LabeledMemoryBank(4.5), "memory bank size must be an integer >= 1"),
        "LabeledMemoryBank('8')": (lambda: LabeledMemoryBank("8"), "memory bank size must be an integer >= 1"),
        "LabeledMemoryBank(8, dim=2.0)": (lambda: LabeledMemoryBank(8, 2.0), "memory bank dim must be an integer"),
        "bank.enqueue float labels": (
            lambda: LabeledMemoryBank(8, 8).enqueue(x, g.float()),
            "memory bank labels must be an integer tensor",
        ),
        "bank.enqueue labels (2,)": (
            lambda: LabeledMemoryBank(8, 8).enqueue(x, g[:2]),
            "memory bank labels must have shape (4,)",
        ),
        "bank.enqueue meta": (
            lambda: LabeledMemoryBank(8, 8).enqueue(meta),
            "memory bank embeddings is on the meta device",
        ),
        "tcl_loss list keys": (
            lambda: tcl_loss(x, g, keys=[[1.0] * 8], key_groups=g),
            "keys must be a torch.Tensor or None, got list",
        ),
        "tcl_loss list key_groups": (
            lambda: tcl_loss(x, g, keys=x, key_groups=[0, 1, 0, 1]),
            "key_groups must be a torch.Tensor or None, got list",
        ),
        "tcl_loss list self_index": (
            lambda: tcl_loss(x, g, keys=x, key_groups=g, self_index=[0, 1, 2, 3]),
            "self_index must be a torch.Tensor or None, got list",
        ),
        "TCLPMLLoss list ref_labels": (
            lambda: TCLPMLLoss()(x, g, ref_labels=[0, 1]),
            "ref_labels must be a torch.Tensor or None, got list",
        ),
        "TCLLoss list labels": (
            lambda: TCLLoss()(x, x, labels=[0, 1, 0, 1]),
            "labels must be a torch.Tensor, got list",
        ),
        "TCLLoss(memory_bank_size=-1)": (
            lambda: TCLLoss(memory_bank_size=-1),
            "memory_bank_size must be 0, an int K >= 0 or a (K >= 0, D >= 1) pair of integers, got -1",
        ),
        "TCLLoss(memory_bank_size=(5, 0))": (
            lambda: TCLLoss(memory_bank_size=(5, 0)),
            "memory_bank_size must be 0, an int K >= 0 or a (K >= 0, D >= 1) pair of integers, got (5, 0)",
        ),
    }


@pytest.mark.parametrize("case", list(_loss_cases()))
def test_door_the_loss_api_refuses_what_it_cannot_compute_naming_argument_and_value(case):
    call, message = _loss_cases()[case]
    with pytest.raises(ValueError) as refused:
        call()
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": "np.float32(0.1)"}, {"k1": "np.int64(10)"}, {"k2": "np.float64(2)"}]
)
def test_door_numpy_numbers_are_hyper_parameters(kwargs):
    import numpy as np

    from tcl_ssl.loss import TCLLoss
    from tcl_ssl.pml import TCLPMLLoss

    given = {key: eval(text, {"np": np}) for key, text in kwargs.items()}  # noqa: S307 - the test's own text
    plain = {key: float(value) for key, value in given.items()}
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(TCLLoss(**given)(x, y), TCLLoss(**plain)(x, y))
    assert TCLPMLLoss(**given)(x, torch.tensor([0, 1, 0, 1])).isfinite()
    assert TCLLoss(memory_bank_size=np.int64(8)).memory_bank.size == 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (a GPU)")
def test_door_views_and_labels_on_different_devices_are_refused():
    from tcl_ssl.loss import TCLLoss, tcl_loss

    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="must be on one device, got view 0 on cpu, view 1 on cuda"):
        TCLLoss()(x, x.cuda())
    with pytest.raises(ValueError, match="must be on one device, got views on cuda:0, labels on cpu"):
        TCLLoss()(x.cuda(), x.cuda(), labels=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="must be on one device, got embeddings on cuda:0, groups on cpu"):
        tcl_loss(x.cuda(), torch.tensor([0, 1, 0, 1]))


def test_door_a_bad_method_option_reaching_the_loss_is_refused_before_any_data(capsys, tmp_path, monkeypatch):
    import tcl_ssl.train as train

    monkeypatch.setattr(train, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    out = tmp_path / "run"
    _refused(
        capsys,
        ["pretrain", *QUICK, "--out", str(out), "-o", "temperature=true"],
        "temperature must be a finite number > 0 (a Python or numpy number), got True",
    )
    assert not (out / "config.json").exists()


# ---- runs ----
# Run directories that cannot be confused (issue 19, items 3 and 5; data-loss cases (b) and (c)).

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


def _copy_run_as(run: Path, to: Path) -> Path:
    """A copy of the run directory ``run`` at ``to``."""
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

    copy = _copy_run_as(finished_run, tmp_path / "copy")
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
    copy = _copy_run_as(finished_run, tmp_path / "copy")
    before = _digests(finished_run)
    assert read_record(copy).config.run.out == str(copy)  # not the original's, written in the file
    summary = pretrain(read_record(copy).config.replace(resume=str(copy), out=None, epochs=2))
    assert summary is not None and Path(summary.run_dir).resolve() == copy
    assert read_summary(copy).epochs == 2 and _digests(finished_run) == before
    assert not (tmp_path / "runs").exists()  # no new directory beside it


def test_a_finished_runs_out_reused_with_another_method_is_refused(capsys, tmp_path, finished_run):
    """Issue 19, data loss (b): the run's config.json was rewritten with the other method."""
    run = _copy_run_as(finished_run, tmp_path / "run")
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
    run = _copy_run_as(finished_run, tmp_path / "run")
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
    run = _copy_run_as(finished_run, tmp_path / "run")
    dataset = json.loads((run / "config.json").read_text())["config"]["data"]["dataset"]
    old = {"dataset": dataset, "checkpoint": "x", "protocols": ["knn"], "val": {}, "test": {"knn_top1": 1.0}}
    (run / "eval.json").write_text(json.dumps({dataset: old}))
    assert main(["eval", str(run), "--protocols", "knn", "--no-plots"]) == 0
    entries = json.loads((run / "eval.json").read_text())["entries"]
    assert entries[f"{dataset}@unknown-weights"]["test"] == {"knn_top1": 1.0} and len(entries) == 2


@pytest.mark.parametrize("content", ["", '{"format": "tcl-ssl-eval", "version": 2, "entries": [1]}', "[]"])
def test_a_damaged_eval_json_is_named_before_any_work(capsys, tmp_path, finished_run, content):
    run = _copy_run_as(finished_run, tmp_path / "run")
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
    run = _copy_run_as(finished_run, tmp_path / "run")
    (run / "config.json").write_text(change(json.loads((run / "config.json").read_text())))
    before = _digests(run)
    argv = ["eval", str(run), "--no-plots"] if command == "eval" else ["export", str(run), "--out", str(tmp_path / "b")]
    err = _refused(capsys, argv, message)
    assert str(run / "config.json") in err
    assert _digests(run) == before and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "environment,zero",
    [
        ({}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "GROUP_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"RANK": "0", "LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"RANK": "2", "LOCAL_RANK": "0"}, False),
        ({"SLURM_PROCID": "3"}, False),
    ],
)
def test_only_global_process_zero_prints_and_checks(monkeypatch, environment, zero):
    from tcl_ssl.processes import is_process_zero

    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_process_zero() is zero
