"""ImageNet-100: the CMC class list, and the subset folder built from a synthetic ImageNet tree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tcl_ssl.cli import main
from tcl_ssl.cli.tools import imagenet100
from tcl_ssl.data.imagenet100 import IMAGENET100_CLASSES, build_imagenet100

#: ImageNet-1k classes that are not in ImageNet-100 (tench, toilet tissue, cowboy boot)
DISTRACTORS = ("n01440764", "n15075141", "n03124043")
PER_CLASS = 2  # images per class per split
TOTAL = {"train": 100 * PER_CLASS, "val": 100 * PER_CLASS}


def make_source(root: Path, classes=IMAGENET100_CLASSES + DISTRACTORS, splits=("train", "val")) -> Path:
    """``root/<split>/<wnid>/<wnid>_<i>.JPEG``, a few distinct bytes each, plus a non-image file."""
    for split in splits:
        for wnid in classes:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(PER_CLASS):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(f"{split}/{wnid}/{i}".encode())
            (folder / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("imagenet"))


def entries(out: Path) -> list[Path]:
    """Every image entry of ``out``, relative to it (the same path as its image in the source)."""
    return [path.relative_to(out) for split in ("train", "val") for path in sorted((out / split).glob("*/*"))]


# --- the class list ----------------------------------------------------------------------------


def test_classes_are_100_unique_well_formed_wnids():
    assert isinstance(IMAGENET100_CLASSES, tuple)
    assert len(IMAGENET100_CLASSES) == 100
    assert len(set(IMAGENET100_CLASSES)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in IMAGENET100_CLASSES)
    assert not set(DISTRACTORS) & set(IMAGENET100_CLASSES)


def test_classes_are_the_cmc_list():
    # github.com/HobbitLong/CMC imagenet100.txt, identical (same order) to solo-learn's
    # solo/data/dataset_subset/imagenet100_classes.txt: first n02869837 (bonnet), last n02090622
    # (borzoi); sorted, it runs from n01558993 (robin) to n13040303 (stinkhorn).
    assert IMAGENET100_CLASSES[0] == "n02869837"
    assert IMAGENET100_CLASSES[-1] == "n02090622"
    assert IMAGENET100_CLASSES[:5] == ("n02869837", "n01749939", "n02488291", "n02107142", "n13037406")
    ordered = sorted(IMAGENET100_CLASSES)
    assert (ordered[0], ordered[-1]) == ("n01558993", "n13040303")
    for member in ("n02123045", "n02085620", "n03637318", "n04592741", "n07753275"):  # tabby, Chihuahua,
        assert member in IMAGENET100_CLASSES  # lampshade, wing, pineapple


# --- building ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_build_links_exactly_the_100_classes(source, tmp_path, mode):
    out = tmp_path / "imagenet100"
    counts = build_imagenet100(source, out, mode=mode)

    assert counts == TOTAL
    assert sorted(os.listdir(out)) == ["classes.txt", "train", "val"]
    assert (out / "classes.txt").read_text().split() == list(IMAGENET100_CLASSES)
    for split in ("train", "val"):
        assert sorted(os.listdir(out / split)) == sorted(IMAGENET100_CLASSES)  # no distractors
        for wnid in IMAGENET100_CLASSES:
            assert sorted(os.listdir(out / split / wnid)) == [f"{wnid}_{i}.JPEG" for i in range(PER_CLASS)]
            for i in range(PER_CLASS):
                dst = out / split / wnid / f"{wnid}_{i}.JPEG"
                src = source / split / wnid / f"{wnid}_{i}.JPEG"
                assert dst.read_bytes() == f"{split}/{wnid}/{i}".encode()
                if mode == "symlink":
                    assert os.readlink(dst) == str(src) and os.path.isabs(os.readlink(dst))
                elif mode == "hardlink":
                    assert not dst.is_symlink() and os.path.samefile(dst, src)
                else:
                    assert not dst.is_symlink() and not os.path.samefile(dst, src)


def test_rerun_is_idempotent_and_repairs_an_interrupted_build(source, tmp_path):
    out = tmp_path / "imagenet100"
    assert build_imagenet100(source, out) == TOTAL
    before = {path: os.lstat(out / path).st_ino for path in entries(out)}
    assert build_imagenet100(source, out) == TOTAL
    assert {path: os.lstat(out / path).st_ino for path in entries(out)} == before  # nothing rewritten

    # as if interrupted: an entry missing, one dangling, one pointing at the wrong image, a temp file
    wnid = IMAGENET100_CLASSES[3]
    (out / "train" / wnid / f"{wnid}_0.JPEG").unlink()
    dangling = out / "val" / wnid / f"{wnid}_1.JPEG"
    dangling.unlink()
    dangling.symlink_to(tmp_path / "gone.JPEG")
    wrong = out / "train" / wnid / f"{wnid}_1.JPEG"
    wrong.unlink()
    wrong.symlink_to(source / "train" / wnid / f"{wnid}_0.JPEG")
    (out / "val" / wnid / f".tmp-imagenet100-{wnid}_0.JPEG").symlink_to(tmp_path / "half")

    assert build_imagenet100(source, out) == TOTAL
    for split in ("train", "val"):
        assert sorted(os.listdir(out / split / wnid)) == [f"{wnid}_0.JPEG", f"{wnid}_1.JPEG"]
        for i in range(PER_CLASS):
            image = Path(split, wnid, f"{wnid}_{i}.JPEG")
            assert os.readlink(out / image) == str(source / image)
    untouched = {path: ino for path, ino in before.items() if path.parts[1] != wnid}
    assert {path: os.lstat(out / path).st_ino for path in untouched} == untouched


@pytest.mark.parametrize("built", [False, True], ids=["first build", "rerun"])
def test_a_build_killed_while_writing_the_class_list_is_rerun(source, tmp_path, built):
    import tempfile

    out = tmp_path / "imagenet100"
    if built:
        assert build_imagenet100(source, out) == TOTAL
    out.mkdir(exist_ok=True)
    # what a process killed inside safe_io.write_text leaves (before: every rerun refused the folder)
    fd, leftover = tempfile.mkstemp(dir=out, prefix=".classes.txt.", suffix=".partial")
    os.close(fd)
    assert build_imagenet100(source, out) == TOTAL
    assert sorted(os.listdir(out)) == ["classes.txt", "train", "val"]  # the leftover removed
    assert (out / "classes.txt").read_text().split() == list(IMAGENET100_CLASSES)


def test_rerun_in_another_mode_replaces_the_entries(source, tmp_path):
    out = tmp_path / "imagenet100"
    build_imagenet100(source, out, mode="symlink")
    assert build_imagenet100(source, out, mode="copy") == TOTAL
    for path in entries(out):
        assert not (out / path).is_symlink() and (out / path).read_bytes() == (source / path).read_bytes()


def test_an_empty_out_folder_is_used(source, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert build_imagenet100(source, out) == TOTAL


def test_other_classes_can_be_given(source, tmp_path):
    chosen = (IMAGENET100_CLASSES[7], DISTRACTORS[0])
    assert build_imagenet100(source, tmp_path / "two", classes=chosen) == {"train": 4, "val": 4}
    assert sorted(os.listdir(tmp_path / "two" / "val")) == sorted(chosen)


# --- refusals ----------------------------------------------------------------------------------


def test_refuses_a_missing_source(tmp_path):
    with pytest.raises(ValueError, match=r"source '.*nowhere' is not a directory; expected an ImageNet root"):
        build_imagenet100(tmp_path / "nowhere", tmp_path / "out")


def test_refuses_a_source_without_train_or_val(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match=r"has no train/ or val/ folder; expected both train/ and val/"):
        build_imagenet100(tmp_path / "bare", tmp_path / "out")
    only_train = make_source(tmp_path / "only_train", splits=("train",))
    with pytest.raises(ValueError, match=r"has no val/ folder; expected both train/ and val/"):
        build_imagenet100(only_train, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before the checks


def test_refuses_missing_classes_listing_the_first_few(tmp_path):
    missing = IMAGENET100_CLASSES[10:17]
    partial = make_source(tmp_path / "partial", classes=tuple(c for c in IMAGENET100_CLASSES if c not in missing))
    with pytest.raises(ValueError) as error:
        build_imagenet100(partial, tmp_path / "out")
    message = str(error.value)
    assert "7 of the 100 classes are missing in" in message and "train" in message
    assert ", ".join(missing[:5]) + ", ..." in message and missing[5] not in message


def test_refuses_missing_val_classes_and_hints_at_an_unsorted_val(tmp_path):
    flat = make_source(tmp_path / "flat", splits=("train",))
    (flat / "val").mkdir()
    (flat / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    hint = r"100 of the 100 classes are missing in '.*val'.*sort its images into val/<wnid>/"
    with pytest.raises(ValueError, match=hint):
        build_imagenet100(flat, tmp_path / "out")


def test_refuses_a_class_folder_without_images(tmp_path):
    src = make_source(tmp_path / "src")
    for image in (src / "val" / IMAGENET100_CLASSES[0]).glob("*.JPEG"):
        image.unlink()
    empty = rf"1 of the 100 class folders in '.*val' hold no images .*: {IMAGENET100_CLASSES[0]}"
    with pytest.raises(ValueError, match=empty):
        build_imagenet100(src, tmp_path / "out")


def test_refuses_an_unknown_mode(source, tmp_path):
    with pytest.raises(ValueError, match=r"mode must be one of symlink, hardlink, copy, got 'move'"):
        build_imagenet100(source, tmp_path / "out", mode="move")


@pytest.mark.parametrize("classes", ["n02869837", (), ("n02869837", "n02869837"), ("../train",)])
def test_refuses_bad_classes(source, tmp_path, classes):
    with pytest.raises(ValueError, match=r"classes must be"):
        build_imagenet100(source, tmp_path / "out", classes=classes)


def test_refuses_an_out_folder_that_holds_something_else(source, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    refusal = r"out '.*other' is not empty and does not hold this ImageNet-100 subset \(no classes.txt\)"
    with pytest.raises(ValueError, match=refusal):
        build_imagenet100(source, other)
    assert os.listdir(other) == ["thesis.tex"]

    built = tmp_path / "built"
    build_imagenet100(source, built)
    (built / "train" / IMAGENET100_CLASSES[0] / "extra.JPEG").write_bytes(b"x")
    extra = r"it has 1 entries that are not images of the source's classes \(train/n02869837/extra.JPEG\)"
    with pytest.raises(ValueError, match=extra):
        build_imagenet100(source, built)

    build_imagenet100(source, tmp_path / "two", classes=IMAGENET100_CLASSES[:2])
    with pytest.raises(ValueError, match=r"its classes.txt lists other classes"):
        build_imagenet100(source, tmp_path / "two")

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ValueError, match=r"out '.*a_file' is a file"):
        build_imagenet100(source, a_file)
    with pytest.raises(ValueError, match=r"must not be the source or inside its train/ or val/"):
        build_imagenet100(source, source / "train" / "subset")


# --- command line ------------------------------------------------------------------------------


def test_main_builds_and_prints_one_summary_line(source, tmp_path, capsys):
    out = tmp_path / "in100"
    assert main(["data", "imagenet100", "--source", str(source), "--out", str(out), "--mode", "hardlink"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"ImageNet-100: 200 train and 200 val images in {out} (hard links)\n"
    assert captured.err == ""
    assert imagenet100(["--source", str(source), "--out", str(out), "--mode", "hardlink"]) == 0  # rerun


def test_main_reports_bad_input_on_stderr_with_status_2(tmp_path, capsys):
    assert main(["data", "imagenet100", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tcl-ssl: error: source ") and "is not a directory" in captured.err


def test_main_parser_is_named_for_the_cli(capsys):
    with pytest.raises(SystemExit) as exit_:
        imagenet100(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tcl-ssl data imagenet100 ")
    with pytest.raises(SystemExit) as exit_:
        imagenet100(["--source", "s", "--out", "o", "--mode", "move"])
    assert exit_.value.code == 2
    assert "invalid choice: 'move'" in capsys.readouterr().err
