"""ImageNet-100: the 100-class ImageNet subset of CMC and solo-learn, built as a folder of links.

:func:`build_imagenet100` takes an ImageNet root in the ImageFolder layout,
``source/train/<wnid>/*.JPEG`` and ``source/val/<wnid>/*.JPEG`` (the validation images already
sorted into class folders, as torchvision's ``ImageFolder`` and solo-learn expect), and writes

    out/classes.txt              the 100 wnids, one a line, in the order of the CMC list
    out/train/<wnid>/<image>     one entry per source image of the 100 classes
    out/val/<wnid>/<image>

Each entry is a symlink to the source image (absolute target; the default, costs no space), a
hard link (same file system only) or a copy. The result is an image folder that
``tcl-ssl pretrain --dataset OUT`` reads like any other (``train/`` and ``val/``).

A build can be interrupted and rerun: every entry is written under a temporary name and renamed
into place, ``classes.txt`` is written first so a rerun recognises its own half-built folder,
entries that are already right are skipped, and wrong or broken ones are replaced.

Command line: ``tcl-ssl data imagenet100 --source DIR --out DIR [--mode symlink|hardlink|copy]``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from tcl_ssl.data.decode import IMAGE_EXTENSIONS
from tcl_ssl.safe_io import is_partial, write_text

log = logging.getLogger(__name__)

# The ImageNet-100 class list of CMC (Tian, Krishnan & Isola, "Contrastive Multiview Coding",
# ECCV 2020), in its order: github.com/HobbitLong/CMC, file imagenet100.txt. solo-learn uses the
# same list in the same order: github.com/vturrisi/solo-learn,
# solo/data/dataset_subset/imagenet100_classes.txt (checked equal, 100 unique wnids).
IMAGENET100_CLASSES: tuple[str, ...] = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
    "n02091831", "n04517823", "n04589890", "n03062245", "n01773797",
    "n01735189", "n07831146", "n07753275", "n03085013", "n04485082",
    "n02105505", "n01983481", "n02788148", "n03530642", "n04435653",
    "n02086910", "n02859443", "n13040303", "n03594734", "n02085620",
    "n02099849", "n01558993", "n04493381", "n02109047", "n04111531",
    "n02877765", "n04429376", "n02009229", "n01978455", "n02106550",
    "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
    "n03785016", "n03764736", "n03775546", "n02087046", "n07836838",
    "n04099969", "n04592741", "n03891251", "n02701002", "n03379051",
    "n02259212", "n07715103", "n03947888", "n04026417", "n02326432",
    "n03637318", "n01980166", "n02113799", "n02086240", "n03903868",
    "n02483362", "n04127249", "n02089973", "n03017168", "n02093428",
    "n02804414", "n02396427", "n04418357", "n02172182", "n01729322",
    "n02113978", "n03787032", "n02089867", "n02119022", "n03777754",
    "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
    "n03837869", "n03494278", "n04136333", "n03794056", "n03492542",
    "n02018207", "n04067472", "n03930630", "n03584829", "n02123045",
    "n04229816", "n02100583", "n03642806", "n04336792", "n03259280",
    "n02116738", "n02108089", "n03424325", "n01855672", "n02090622",
)  # fmt: skip

#: how each image gets into the output folder
MODES = ("symlink", "hardlink", "copy")
#: the two splits of the ImageNet layout that the subset is built from
SPLITS = ("train", "val")
CLASSES_FILE = "classes.txt"
#: prefix of the temporary names that entries are written under before the rename into place
_TMP_PREFIX = ".tmp-imagenet100-"
_SHOWN = 5  # how many missing classes or unexpected entries an error message lists
MODE_WORDS = {"symlink": "symlinks", "hardlink": "hard links", "copy": "copies"}


def build_imagenet100(
    source: Path | str,
    out: Path | str,
    mode: str = "symlink",
    classes: Sequence[str] = IMAGENET100_CLASSES,
) -> dict[str, int]:
    """Build ``out/{train,val}/<wnid>/`` for ``classes`` from the ImageNet root ``source``.

    Returns the number of images of each split, ``{"train": ..., "val": ...}`` (126,689 and
    5,000 for the full ImageNet-1k train and val sets). ``out`` must be missing, empty, or a
    folder that this function built (or began to build) for the same ``classes``; then the
    entries already right are kept and the rest written, so rerunning is cheap and finishes an
    interrupted build.

    Raises ValueError for an unknown ``mode``, a ``source`` that is missing or lacks
    ``train/``/``val/`` or any of the classes, a class folder without images, an ``out`` that
    holds anything else, and ``hardlink`` across file systems.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    classes = _check_classes(classes)
    source = Path(os.path.abspath(source))
    out = Path(os.path.abspath(out))
    images = _source_images(source, classes)
    _check_out(out, source, classes, images, mode)

    out.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(out):  # the class list's temporary file, from a build killed while writing it
        if _temporary(name):
            (out / name).unlink()
    _write_atomic_text(out / CLASSES_FILE, "".join(f"{wnid}\n" for wnid in classes))
    counts = {}
    for split in SPLITS:
        written = kept = 0
        for wnid in classes:
            folder = out / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for name in os.listdir(folder):  # from an interrupted build
                if _temporary(name):
                    (folder / name).unlink()
            for name in images[split][wnid]:
                if _place(source / split / wnid / name, folder / name, mode):
                    written += 1
                else:
                    kept += 1
        counts[split] = written + kept
        log.info("ImageNet-100 %s: %d images written, %d already in place", split, written, kept)
    return counts


def _temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an interrupted build: an image being placed
    (:data:`_TMP_PREFIX`) or the class list being written (:func:`tcl_ssl.safe_io.is_partial`)."""
    return name.startswith(_TMP_PREFIX) or is_partial(name)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes must be a non-empty sequence of class folder names, got {classes!r}")
    classes = tuple(classes)
    bad = [c for c in classes if not isinstance(c, str) or c in ("", ".", "..") or "/" in c or os.sep in c]
    if bad:
        raise ValueError(f"classes must be plain folder names (wnids such as 'n02869837'), got {bad[:_SHOWN]!r}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"classes must be unique, got {repeated[:_SHOWN]!r} more than once")
    return classes


def _source_images(source: Path, classes: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """The image file names of each class of each split, sorted; refuses an incomplete source."""
    layout = "source/train/<wnid>/*.JPEG and source/val/<wnid>/*.JPEG"
    if not source.is_dir():
        raise ValueError(f"source {str(source)!r} is not a directory; expected an ImageNet root with {layout}")
    lacking = [split for split in SPLITS if not (source / split).is_dir()]
    if lacking:
        raise ValueError(
            f"source {str(source)!r} has no {' or '.join(s + '/' for s in lacking)} folder; "
            f"expected both train/ and val/ in the ImageFolder layout: {layout}"
        )
    images: dict[str, dict[str, list[str]]] = {}
    for split in SPLITS:
        root = source / split
        missing = [wnid for wnid in classes if not (root / wnid).is_dir()]
        if missing:
            hint = ""
            if not any(entry.is_dir() for entry in os.scandir(root)):
                hint = f"; {split}/ holds no class folders: sort its images into {split}/<wnid>/ first"
            raise ValueError(
                f"{len(missing)} of the {len(classes)} classes are missing in {str(root)!r}: "
                f"{', '.join(missing[:_SHOWN])}{', ...' if len(missing) > _SHOWN else ''}{hint}"
            )
        images[split] = {wnid: _image_names(root / wnid) for wnid in classes}
        empty = [wnid for wnid in classes if not images[split][wnid]]
        if empty:
            raise ValueError(
                f"{len(empty)} of the {len(classes)} class folders in {str(root)!r} hold no images "
                f"(files ending in {', '.join(IMAGE_EXTENSIONS)}): "
                f"{', '.join(empty[:_SHOWN])}{', ...' if len(empty) > _SHOWN else ''}"
            )
    return images


def _image_names(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            and entry.is_file()
        )


def _check_out(
    out: Path, source: Path, classes: tuple[str, ...], images: dict[str, dict[str, list[str]]], mode: str
) -> None:
    """Refuse an ``out`` that is a file, inside the source's splits, or holds anything but this subset."""
    for inside in (source, *(source / split for split in SPLITS)):
        if out == inside or (inside != source and out.is_relative_to(inside)):
            raise ValueError(
                f"out {str(out)!r} must not be the source or inside its train/ or val/; choose another folder"
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file; expected a missing or empty folder")
    if mode == "hardlink":
        existing = next(p for p in (out, *out.parents) if p.exists())
        if existing.stat().st_dev != (source / SPLITS[0]).stat().st_dev:
            raise ValueError(
                f"mode 'hardlink' needs out {str(out)!r} on the same file system as source {str(source)!r}; "
                f"use mode 'symlink' or 'copy'"
            )
    if not out.is_dir() or all(_temporary(name) for name in os.listdir(out)):
        return  # missing, empty, or holding only a temporary file of an interrupted build
    refuse = f"out {str(out)!r} is not empty and does not hold this ImageNet-100 subset"
    classes_file = out / CLASSES_FILE
    if not classes_file.is_file():
        raise ValueError(f"{refuse} (no {CLASSES_FILE}); choose a missing or empty folder")
    if classes_file.read_text().split() != list(classes):
        raise ValueError(f"{refuse} (its {CLASSES_FILE} lists other classes); choose a missing or empty folder")
    expected: dict[Path, set[str]] = {out: {CLASSES_FILE, *SPLITS}}
    for split in SPLITS:
        expected[out / split] = set(classes)
        expected.update({out / split / wnid: set(images[split][wnid]) for wnid in classes})
    unexpected = []
    for folder, names in expected.items():
        if folder.is_dir():
            unexpected += [
                folder / name for name in sorted(os.listdir(folder)) if name not in names and not _temporary(name)
            ]
        elif folder.exists() or os.path.islink(folder):
            unexpected.append(folder)
    if unexpected:
        shown = ", ".join(str(p.relative_to(out)) for p in unexpected[:_SHOWN])
        raise ValueError(
            f"{refuse}: it has {len(unexpected)} entries that are not images of the source's classes "
            f"({shown}{', ...' if len(unexpected) > _SHOWN else ''}); choose a missing or empty folder"
        )


def _place(src: Path, dst: Path, mode: str) -> bool:
    """Put ``src`` at ``dst`` by ``mode`` unless it is already there; True when written."""
    if _in_place(src, dst, mode):
        return False
    tmp = dst.with_name(_TMP_PREFIX + dst.name)
    if mode == "symlink":
        os.symlink(src, tmp)
    elif mode == "hardlink":
        os.link(src, tmp)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # atomic: dst is the old entry or the new one, never half of either
    return True


def _in_place(src: Path, dst: Path, mode: str) -> bool:
    try:
        if mode == "symlink":
            return dst.is_symlink() and os.readlink(dst) == str(src)
        if dst.is_symlink() or not dst.is_file():
            return False
        if mode == "hardlink":
            return os.path.samefile(src, dst)
        have, want = dst.stat(), src.stat()  # copy: copy2 keeps size and modification time
        same_file = os.path.samefile(src, dst)
        return not same_file and have.st_size == want.st_size and abs(have.st_mtime - want.st_mtime) < 1
    except OSError:
        return False


def _write_atomic_text(path: Path, text: str) -> None:
    write_text(path, text)
