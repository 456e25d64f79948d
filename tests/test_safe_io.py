"""tcl_ssl.safe_io: files written whole or not at all, and read only when whole."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from tcl_ssl.safe_io import (
    DamagedFileError,
    WriteError,
    check_archive,
    is_partial,
    save_torch,
    write_atomic,
    write_bytes,
    write_json,
    write_text,
)


def full_disk(monkeypatch, name: str = "", after: int = 0) -> None:
    """Make ``os.write`` fail with ENOSPC on the temporary files of ``name`` (every file when
    empty) once ``after`` bytes have been written to them, as a disk that fills up would."""
    real_write = os.write
    written = [0]

    def write(fd: int, data) -> int:
        try:
            target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            target = ""
        if target.startswith(f".{name}") and target.endswith(".partial"):
            if written[0] + len(data) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written[0] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def damage_inside_a_tensor(path: Path) -> str:
    """Flip bytes in the middle of the largest tensor entry of the torch file at ``path``, leaving
    the zip structure valid; the entry's name."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    with open(path, "r+b") as file:
        file.seek(entry.header_offset + 26)
        name_length, extra_length = (int.from_bytes(file.read(2), "little") for _ in range(2))
        middle = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
        file.seek(middle)
        original = file.read(16)
        file.seek(middle)
        file.write(bytes(b ^ 0xFF for b in original))
    return entry.filename


def _partials(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".partial")]


def test_writes_land_whole_with_the_usual_permissions(tmp_path):
    assert write_text(tmp_path / "a" / "b.txt", "héllo") == tmp_path / "a" / "b.txt"
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo"
    write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "c.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "c.json").chmod(0o600)
    write_json(tmp_path / "c.json", {})
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o600  # kept from the file replaced
    assert _partials(tmp_path) == []


def test_a_full_disk_keeps_the_previous_file_and_names_file_directory_and_reason(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_text(target, "previous")
    full_disk(monkeypatch, after=3)
    with pytest.raises(WriteError) as raised:
        write_bytes(target, b"new content, longer than the space left")
    assert str(raised.value) == f"cannot write 'summary.json' in {str(tmp_path)!r}: No space left on device"
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    assert target.read_text() == "previous" and _partials(tmp_path) == []


def test_a_full_disk_inside_torch_save_is_a_write_error_not_torchs_runtime_error(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    save_torch({"w": torch.ones(3)}, target)
    before = target.read_bytes()
    full_disk(monkeypatch, after=100)
    with pytest.raises(WriteError, match="cannot write 'model.pt' in .*: No space left on device"):
        save_torch({"w": torch.zeros(100_000)}, target)
    assert target.read_bytes() == before and _partials(tmp_path) == []


def test_any_failure_of_the_writer_removes_the_temporary_file(tmp_path):
    def fail(file):
        file.write(b"half")
        raise RuntimeError("the figure could not be drawn")

    with pytest.raises(RuntimeError, match="the figure could not be drawn"):  # not a write error: as it is
        write_atomic(tmp_path / "x", fail)
    assert list(tmp_path.iterdir()) == []


def test_is_partial_knows_the_temporary_names_write_atomic_makes(tmp_path):
    seen = []

    def peek(file):  # the temporary file is the only entry while it is written
        seen.extend(p.name for p in tmp_path.iterdir())
        file.write(b"x")

    for name in ("classes.txt", "last.ckpt", ".hidden", "a.partial"):
        write_atomic(tmp_path / name, peek)
        assert is_partial(seen[-1]), seen[-1]
        (tmp_path / name).unlink()
    for name in ("classes.txt", "x.partial", ".x.partial", ".classes.txt.abc.partial", ".tmp-imagenet100-a.JPEG"):
        assert not is_partial(name), name


def test_a_directory_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(WriteError, match=f"cannot write 'x.json' in {str(tmp_path / 'a-file')!r}: "):
        write_json(tmp_path / "a-file" / "x.json", {})


def test_concurrent_writers_of_one_file_never_mix_or_collide(tmp_path):
    target = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(4)]
    (tmp_path / ".shared.bin.partial").write_bytes(b"someone else's")  # a name a fixed scheme would take

    def writer(payload: bytes) -> None:
        for _ in range(10):
            write_bytes(target, payload)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert (tmp_path / ".shared.bin.partial").read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shared.bin.partial", "shared.bin"]


def test_the_file_size_limit_is_an_error_not_a_killed_process(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"previous")
    script = (
        "import resource, sys\n"
        "from tcl_ssl.safe_io import write_bytes\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "try:\n"
        f"    write_bytes({str(target)!r}, bytes(300_000))\n"
        "except OSError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr  # not killed by SIGXFSZ (-25)
    assert f"cannot write 'big.bin' in {str(tmp_path)!r}: File too large" in done.stdout
    assert target.read_bytes() == b"previous" and _partials(tmp_path) == []


def test_check_archive_finds_damaged_tensor_bytes_truncation_and_foreign_files(tmp_path):
    path = save_torch({"w": torch.arange(10_000, dtype=torch.float32)}, tmp_path / "w.pt")
    assert check_archive(path) == path
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    entry = damage_inside_a_tensor(path)
    assert torch.load(path)["w"].shape == (10_000,)  # torch itself loads it without a word
    with pytest.raises(DamagedFileError, match=rf"'{path}' is damaged: its entry '{entry}' does not match"):
        check_archive(path)
    for bad in (cut, text):
        with pytest.raises(DamagedFileError, match=rf"'{bad}' is damaged or not a torch file .*; resume from an"):
            check_archive(bad)
