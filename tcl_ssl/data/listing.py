"""Listing an image folder (``root/<class>/<image>``): its class folders, its image files and the
entries that cannot be images (dangling links, link loops, FIFOs and other non-regular files).

Like torchvision's ``ImageFolder``, files are chosen by extension (:data:`IMAGE_EXTENSIONS`),
links to folders are followed, and a class folder without images is refused. Names that are
not UTF-8 stay as ``os.fsdecode`` gives them (surrogate escapes), so every path opens again.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from tcl_ssl.data.decode import IMAGE_EXTENSIONS

__all__ = ["list_image_folder", "walk_images"]

log = logging.getLogger(__name__)


def _why_not_a_file(path: Path) -> str:
    """Why ``path`` (an entry that is neither a regular file nor a folder) cannot be an image."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"dangling symbolic link to {os.readlink(path)!r}"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        return error.strerror or str(error)
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind})"


def _is(test: Callable[[], bool]) -> bool:
    """A ``DirEntry`` test (``is_dir``/``is_file``, which follow links), false where the link is a loop."""
    try:
        return test()
    except OSError:
        return False


def walk_images(folder: Path, _above: frozenset[tuple[int, int]] = frozenset()) -> Iterator[tuple[Path, str | None]]:
    """The image files under ``folder`` in path order, each with ``None``, or with why it cannot be
    read (dangling link, link loop, FIFO, ...). Links to folders are followed; one that leads back
    to a folder above it is reported as a loop.

    Raises:
        ValueError: naming a folder that cannot be listed.
    """
    try:
        info = folder.stat()
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        raise ValueError(f"cannot list folder {str(folder)!r} ({error.strerror or error})") from error
    above = _above | {(info.st_dev, info.st_ino)}
    for entry in entries:
        path = Path(entry.path)
        if _is(entry.is_dir):
            target = path.stat()
            if (target.st_dev, target.st_ino) in above:
                yield path, "symbolic link loop (a link to a folder above it)"
            else:
                yield from walk_images(path, above)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield path, None if _is(entry.is_file) else _why_not_a_file(path)


def list_image_folder(
    root: Path, classes: list[str] | None = None, skip_bad: bool = False
) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``root/<class>/`` and their class indices (classes sorted by name, or
    indexed as in ``classes``, which must then name every class folder).

    Entries that cannot be read as files (dangling links, link loops, FIFOs, ...) are refused,
    naming the first and counting them, or with ``skip_bad`` left out with a warning that does.

    Raises:
        ValueError: for a missing folder, fewer than 2 classes, unknown classes, no images at
            all, unreadable entries (without ``skip_bad``), or class folders without images.
    """
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if len(found) < 2:
            raise ValueError(
                f"image folder {str(root)!r} has {len(found)} class folder(s) {found}: at least 2 are needed "
                "(root/<class>/<image>; the labels drive the evaluation, and supervised training)"
            )
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"class folders {unknown} of {str(root)!r} are not among the training classes {classes}")
    files: list[Path] = []
    labels: list[int] = []
    bad: list[tuple[Path, str]] = []
    empty: list[str] = []
    for cls in found:
        count = len(files)
        for path, reason in walk_images(root / cls):
            if reason is not None:
                bad.append((path, reason))
                continue
            files.append(path)
            labels.append(classes.index(cls))
        if len(files) == count:
            empty.append(cls)
    if bad:
        if not skip_bad:
            what = "1 entry" if len(bad) == 1 else f"{len(bad)} entries"
            raise ValueError(
                f"{what} under {str(root)!r} cannot be read as image files, e.g. {str(bad[0][0])!r} "
                f"({bad[0][1]}); remove them, or pass --skip-bad-images to leave such files out"
            )
        log.warning(
            "skipped %d entries under %s that cannot be read as image files, e.g. %s (%s)",
            len(bad),
            root,
            bad[0][0],
            bad[0][1],
        )
    if not files:
        raise ValueError(
            f"no images found in {str(root)!r}: expected root/<class>/<image> with extensions {IMAGE_EXTENSIONS}"
        )
    if empty:
        raise ValueError(
            f"class folder(s) {empty} of {str(root)!r} hold no image files (extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}): add images or remove the folders (empty class folders "
            "are refused, as by torchvision's ImageFolder)"
        )
    return files, labels, classes
