"""Files written whole, read only when whole.

Every file that a user or a later run depends on (checkpoints, exported backbones, ``config.json``,
``summary.json``, ``eval.json``, tables, plots, the image cache) is written by :func:`write_atomic`:
into a temporary file beside its destination, flushed and ``fsync``-ed, renamed over the
destination (``os.replace``), and the directory ``fsync``-ed. Readers see the old file or the new
one, never a part of one; a failed write (full disk, file size limit, no permission) removes the
temporary file, leaves the old file as it was, and raises :class:`WriteError` naming the file,
its directory and the reason.

Torch files (checkpoints, exports, the image cache) are zip archives whose every entry carries a
CRC-32; :func:`check_archive` verifies them before a file is used, so a damaged file is refused by
name (:class:`DamagedFileError`) instead of being loaded with wrong weights.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DamagedFileError",
    "WriteError",
    "check_archive",
    "error_line",
    "is_partial",
    "save_figure",
    "save_torch",
    "write_atomic",
    "write_bytes",
    "write_json",
    "write_text",
]

_UMASK = os.umask(0)
os.umask(_UMASK)

_PARTIAL_SUFFIX = ".partial"
#: the name of :func:`write_atomic`'s temporary file for a file NAME: ``.NAME.`` + the 8 random
#: characters of :func:`tempfile.mkstemp` (lower-case letters, digits, ``_``) + ``.partial``
_PARTIAL = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_PARTIAL_SUFFIX), re.DOTALL)


class WriteError(OSError):
    """A file could not be written: ``"cannot write {path!r} in {dir!r}: {reason}"``.

    The previous content of ``path``, if any, is unchanged. ``errno`` is that of the cause.
    """

    def __init__(self, path: Path, reason: str, code: int | None = None) -> None:
        super().__init__(code if code is not None else 0, reason)
        self.path = path
        self.reason = reason
        self.message = f"cannot write {path.name!r} in {str(path.parent)!r}: {reason}"

    def __str__(self) -> str:
        return self.message


class DamagedFileError(ValueError):
    """A file is damaged (truncated, or bytes changed since it was written):
    ``"{path!r} {problem}; {advice}"``, naming the file and what to do."""

    def __init__(self, path: Path, problem: str, advice: str) -> None:
        super().__init__(f"{str(path)!r} {problem}; {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice


def error_line(error: BaseException) -> str:
    """The first line of ``error``'s message (libraries such as torch and PIL write several), or
    its type's name when the message is empty: a short cause for a message naming a file."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _os_error(error: BaseException) -> OSError | None:
    """The first ``OSError`` in ``error``'s chain (``torch.save`` wraps it in a ``RuntimeError``)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _write_error(path: Path, error: OSError) -> WriteError:
    """``error`` as a :class:`WriteError` for ``path``, its reason errno's text (e.g. ``No space
    left on device``)."""
    code = error.errno
    reason = error.strerror or (os.strerror(code) if code else str(error))
    if code == errno.EFBIG:
        reason += " (the file size limit, ulimit -f)"
    return WriteError(path, reason, code)


def _ignore_file_size_signal() -> None:
    """Make writes beyond the file size limit (``ulimit -f``) fail with ``EFBIG`` instead of
    killing the process with ``SIGXFSZ`` (its default action). CPython ignores the signal at
    startup; this covers an interpreter embedded without its signal handlers, or a library that
    restored the default. Only the main thread may set it."""
    sigxfsz = getattr(signal, "SIGXFSZ", None)
    if sigxfsz is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(sigxfsz) == signal.SIG_DFL:
        signal.signal(sigxfsz, signal.SIG_IGN)


class _Sink(io.RawIOBase):
    """The temporary file as a raw stream written with ``os.write``; keeps the first
    ``OSError``, which a writer such as ``torch.save`` may turn into another exception."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def write(self, data: Any) -> int:
        try:
            return os.write(self._fd, data)
        except OSError as error:
            self.error = self.error or error
            raise

    def close(self) -> None:  # the descriptor is closed by write_atomic
        super().close()


def is_partial(name: str) -> bool:
    """Whether the file name ``name`` (no directory) is that of a temporary file of
    :func:`write_atomic` (``.classes.txt.k3j_9xq2.partial``): one a killed process left behind,
    which nothing reads and which may be deleted."""
    return _PARTIAL.fullmatch(name) is not None


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file whole or not at all: ``write(file)`` fills a temporary file beside ``path``
    (same directory, a unique name), which is flushed, ``fsync``-ed and renamed to ``path``; then
    the directory is ``fsync``-ed. The new file has the permissions of the one it replaces (else
    ``0o666`` less the umask).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError: naming the file, its directory and why (e.g. ``No space left on device``),
            if the file system refuses (any ``OSError``, also one that ``write`` wraps in
            another exception). Any other exception of ``write`` is raised as it is. Either
            way the temporary file is removed and the previous ``path`` is kept.
    """
    path = Path(path)
    _ignore_file_size_signal()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX)
    except OSError as error:
        raise _write_error(path, error) from None
    sink = _Sink(fd)
    try:
        try:
            with io.BufferedWriter(sink, buffer_size=1 << 20) as file:
                write(file)
                file.flush()
                os.fsync(fd)
            try:
                mode = path.stat().st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException as error:
        Path(partial).unlink(missing_ok=True)
        cause = sink.error or _os_error(error)
        if cause is None:  # not a failed write (an object that cannot be saved, an interrupt)
            raise
        raise _write_error(path, cause) from error
    _sync_directory(path.parent)
    return path


def _sync_directory(directory: Path) -> None:
    """``fsync`` a directory so that a rename in it survives a power cut (where the platform and
    file system allow: some refuse to open or sync directories, which then only loses durability)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`write_atomic`)."""

    def fill(file: IO[bytes]) -> None:
        file.write(data)

    return write_atomic(path, fill)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, content: Any) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically (:func:`write_atomic`)."""
    return write_text(path, json.dumps(content, indent=2))


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`write_atomic`); a zip archive whose
    entries :func:`check_archive` can verify."""
    import torch  # here: the JSON writers are used where torch is not imported yet

    return write_atomic(path, lambda file: torch.save(obj, file))


def save_figure(fig: Any, path: str | Path, **options: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically (:func:`write_atomic`), in the format of the file's
    suffix (e.g. ``.png``, ``.pdf``); ``options`` go to ``savefig`` (e.g. ``dpi``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None
    return write_atomic(path, lambda file: fig.savefig(file, format=fmt, **options))


def check_archive(
    path: str | Path, advice: str = "resume from an earlier checkpoint or delete it to start over"
) -> Path:
    """Verify that the torch file at ``path`` is whole: a zip archive (the format of
    ``torch.save``) whose every entry matches its CRC-32.

    Args:
        path: a checkpoint, an exported backbone or a cache entry.
        advice: what to do about a damaged file, appended to the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DamagedFileError: naming the file (and the damaged entry) and ``advice``, if it is not a
            zip archive, is truncated, or an entry's bytes differ from those written.
        OSError: if the file cannot be read at all (missing, no permission).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as error:
        raise DamagedFileError(path, f"is damaged or not a torch file ({error})", advice) from None
    if bad is not None:
        raise DamagedFileError(
            path, f"is damaged: its entry {bad!r} does not match the checksum it was written with", advice
        )
    return path
