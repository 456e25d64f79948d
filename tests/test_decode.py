"""One decode function for in-memory and streamed image folders: every PIL mode and bit depth
becomes what PIL's ``convert("RGB")`` / ``convert("L")`` gives for the first frame (PIL is the
oracle), and the common 8-bit JPEG/PNG files take torchvision's fast path with the same pixels."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tcl_ssl.data import decode
from tcl_ssl.data.decode import decode_file, fast_decodable
from tcl_ssl.data.streaming import FileSplit

SIDE = 8


def _image(mode: str, seed: int = 0) -> Image.Image:
    """A random ``SIDE x SIDE`` image of ``mode``; high-depth modes span values beyond 0..255."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (SIDE, SIDE), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-300, 70000, (SIDE, SIDE), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.uniform(-20.0, 400.0, (SIDE, SIDE)).astype(np.float32))
    rgba = Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 4), dtype=np.uint8))
    if mode in ("P", "PA"):
        palette = rgba.convert("RGB").quantize(16)
        return palette if mode == "P" else palette.convert("PA")
    return rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)


def _png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (PIL cannot write one): ``pixels`` uint16 ``(H, W, 3)``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


#: (PIL mode, file extension): every mode in the formats that store it
MODES = [
    ("1", "png"),
    ("1", "bmp"),
    ("1", "tiff"),
    ("L", "png"),
    ("L", "jpg"),
    ("L", "bmp"),
    ("L", "pgm"),
    ("L", "tif"),
    ("L", "gif"),
    ("LA", "png"),
    ("LA", "tiff"),
    ("P", "png"),
    ("P", "gif"),
    ("P", "bmp"),
    ("P", "tiff"),
    ("RGB", "png"),
    ("RGB", "jpeg"),
    ("RGB", "bmp"),
    ("RGB", "ppm"),
    ("RGB", "tiff"),
    ("RGB", "webp"),
    ("RGBA", "png"),
    ("RGBA", "tiff"),
    ("RGBA", "webp"),
    ("CMYK", "jpg"),
    ("CMYK", "tiff"),
    ("YCbCr", "jpg"),
    ("YCbCr", "tiff"),
    ("I;16", "png"),
    ("I;16", "tiff"),
    ("I", "tiff"),
    ("F", "tiff"),
]


def _oracle(path: Path, channels: int) -> np.ndarray:
    """PIL's ``convert`` of the file's first frame, as ``(C, H, W)``."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    return pixels.transpose(2, 0, 1) if channels == 3 else pixels[None]


def _assert_like_pil(path: Path) -> None:
    """``path`` decodes, in memory and streamed, to PIL's RGB and L conversions."""
    for channels in (3, 1):
        expected = _oracle(path, channels)
        in_memory = decode_file(path, SIDE, channels)
        streamed, _ = FileSplit.from_paths([path], [0], SIDE, channels=channels).dataset()[0]
        assert in_memory.dtype == streamed.dtype == torch.uint8
        np.testing.assert_array_equal(in_memory.numpy(), expected, err_msg=f"{path.name} channels={channels}")
        np.testing.assert_array_equal(streamed.numpy(), expected, err_msg=f"{path.name} streamed")


@pytest.mark.parametrize("mode,ext", MODES, ids=[f"{m}-{e}" for m, e in MODES])
def test_every_mode_decodes_as_pil_converts_it(tmp_path, mode, ext):
    path = tmp_path / f"image.{ext}"
    _image(mode).save(path)
    _assert_like_pil(path)


def test_sixteen_bit_rgb_png_decodes_as_pil_reads_it(tmp_path):
    path = tmp_path / "rgb16.png"
    _png_rgb16(path, np.random.default_rng(0).integers(0, 65536, (SIDE, SIDE, 3), dtype=np.uint16))
    assert fast_decodable(path.read_bytes()) is None
    _assert_like_pil(path)


def test_sixteen_bit_gray_is_clipped_not_wrapped_with_one_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(decode, "_warned_clipping", False)
    ramp = np.arange(0, 1024, 16, dtype=np.uint16).reshape(SIDE, SIDE)  # 0..1008: past 255 from the 17th pixel
    for name in ("a.png", "b.png"):
        Image.fromarray(ramp).save(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        first = decode_file(tmp_path / "a.png", SIDE, 1)
        decode_file(tmp_path / "b.png", SIDE, 1)
    np.testing.assert_array_equal(first[0].numpy(), np.minimum(ramp, 255))  # no saw-tooth
    clipped = [r for r in caplog.records if "clipped to 0..255" in r.getMessage()]
    assert len(clipped) == 1 and str(tmp_path / "a.png") in clipped[0].getMessage()


@pytest.mark.parametrize("ext", ["gif", "png", "webp"])
def test_animated_images_give_their_first_frame(tmp_path, ext):
    path = tmp_path / f"animated.{ext}"
    frames = [Image.new("RGB", (SIDE, SIDE), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 3
    _assert_like_pil(path)
    assert decode_file(path, SIDE)[1].float().mean() < 100  # not the green second frame


def test_common_jpeg_and_png_take_the_fast_path(tmp_path):
    kinds = {}
    for mode, ext in [("RGB", "png"), ("RGBA", "png"), ("L", "png"), ("RGB", "jpg"), ("L", "jpg"), ("CMYK", "jpg")]:
        _image(mode).save(tmp_path / f"{mode}.{ext}")
        kinds[f"{mode}.{ext}"] = fast_decodable((tmp_path / f"{mode}.{ext}").read_bytes())
    _image("P").save(tmp_path / "P.png")
    _image("I;16").save(tmp_path / "I16.png")
    _image("RGB").save(tmp_path / "RGB.bmp")
    for name in ("P.png", "I16.png", "RGB.bmp"):
        kinds[name] = fast_decodable((tmp_path / name).read_bytes())
    assert kinds == {
        "RGB.png": "rgb",
        "RGBA.png": "rgb",
        "L.png": "gray",
        "RGB.jpg": "rgb",
        "L.jpg": "gray",
        "CMYK.jpg": None,  # 4 components: PIL
        "P.png": None,  # palette: PIL
        "I16.png": None,  # 16 bits: PIL
        "RGB.bmp": None,
    }


def test_decode_with_pil_is_the_slow_path_with_the_same_pixels(tmp_path):
    for mode, ext in [("RGB", "png"), ("L", "png"), ("RGB", "jpg")]:
        path = tmp_path / f"{mode}.{ext}"
        _image(mode).save(path)
        data = path.read_bytes()
        assert fast_decodable(data) is not None
        for channels in (3, 1):
            by_pil = decode.decode_with_pil(data, channels)
            assert by_pil.dtype == torch.uint8
            np.testing.assert_array_equal(by_pil.numpy(), _oracle(path, channels), err_msg=f"{path.name} {channels}")
            np.testing.assert_array_equal(by_pil.numpy(), decode.decode_pixels(data, channels).numpy())


def test_bench_decode_prints_a_row_per_decoder(tmp_path, capsys):
    from tcl_ssl.bench import decode as bench_decode

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _image("RGB", seed=i).save(tmp_path / cls / f"{i}.jpg")
    assert bench_decode.main(["--dataset", str(tmp_path), "--num-images", "6", "--repeats", "2"]) == 0
    table = capsys.readouterr().out
    for label in bench_decode.ROWS:
        assert f"| {label} |" in table and "| 6 / 6 |" in table.split(f"| {label} |")[1].splitlines()[0]
