"""Every kind of messy file gets defined behaviour: converted, or skipped with a reason."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunevision.data.sources import Sample, load_images
from tunevision.data.images import ImageError, decode_square, to_rgb
from tunevision.data.discover import discover


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255          # red, but fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = decode_square(tmp_path / "a.png", 8)
    assert out.shape == (8, 8, 3) and (out == 255).all()


def test_palette_with_transparency_and_grayscale_and_cmyk(tmp_path: Path) -> None:
    p = Image.new("P", (12, 12), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    assert (decode_square(tmp_path / "p.png", 8) == 255).all()
    Image.new("L", (12, 9), 77).save(tmp_path / "g.jpg")
    g = decode_square(tmp_path / "g.jpg", 8)
    assert g.shape == (8, 8, 3) and abs(int(g.mean()) - 77) <= 2
    Image.new("CMYK", (12, 9), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    c = decode_square(tmp_path / "c.jpg", 8)
    assert c[..., 0].mean() > 200 and c[..., 1].mean() < 60  # CMYK (0,1,1,0) is red


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.full((10, 10), 32768, np.uint16)  # mid-grey in 16 bit
    Image.fromarray(arr).save(tmp_path / "x16.png")
    out = decode_square(tmp_path / "x16.png", 8)
    assert 120 <= out.mean() <= 135


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    from tunevision.data.images import open_image
    up = open_image(tmp_path / "r.jpg")
    assert up.size == (20, 40)  # width and height swapped
    assert np.asarray(up.convert("L"))[:15].mean() > 200  # white half now on top


def test_gif_is_converted(tmp_path: Path) -> None:
    Image.new("P", (30, 20), 1).save(tmp_path / "x.gif")
    assert decode_square(tmp_path / "x.gif", 16).shape == (16, 16, 3)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.jpg", b"", "empty file"),
    ("junk.jpg", b"this is not an image at all", "not a readable image"),
])
def test_unreadable_files_raise_with_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode_square(tmp_path / name, 8)


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_square(tmp_path / "t.jpg", 8)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h: enough to trip a decompression-bomb guard without the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageError, match="MP|decompression"):
        decode_square(tmp_path / "bomb.png", 8)


def test_messy_dataset_trains_on_what_works_and_lists_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "messy"
    from tests.conftest import make_class_folders
    make_class_folders(root, n=6)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "blue" / "notes.txt").write_text("hello")
    (root / "red" / "zero.jpg").write_bytes(b"")
    (root / "red" / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    (root / "empty_class").mkdir()
    ds = discover(str(root))
    assert ds.classes == ["blue", "red"]
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert "left by the system or a tool" in reasons[".DS_Store"]
    assert "not an image" in reasons["notes.txt"]
    assert "empty class folder" in reasons["empty_class"]
    images, bad = load_images(ds.train + ds.val, 16, cache_dir=None)
    assert {Path(b.path).name for b in bad} == {"zero.jpg", "bomb.png"}
    assert len(images) == len(ds.train) + len(ds.val) - 2


def test_to_rgb_handles_la() -> None:
    im = Image.new("LA", (4, 4), (0, 0))
    assert np.asarray(to_rgb(im)).min() == 255


def test_iphone_heic_and_avif_photos_are_read(tmp_path: Path, monkeypatch) -> None:
    """HEIC (pillow-heif's plugin, registered at the first one) and AVIF (Pillow's own), by name or by content; without
    pillow-heif a HEIC photo is skipped with the fix."""
    pillow_heif = pytest.importorskip("pillow_heif")
    from tunevision.data import images
    pillow_heif.register_heif_opener()  # to write the test's files
    root = tmp_path / "data"
    for c in ("red", "blue"):
        (root / c).mkdir(parents=True)
        colour = (200, 40, 30) if c == "red" else (30, 40, 200)
        photo = Image.fromarray(np.full((40, 60, 3), colour, np.uint8))
        photo.save(root / c / "IMG_0001.HEIC")
        photo.save(root / c / "b.avif")
        photo.save(root / c / "download", format="HEIF")  # no extension: told by its first bytes
    square = decode_square(root / "red" / "IMG_0001.HEIC", 32)
    assert square.shape == (32, 32, 3) and abs(int(square[..., 0].mean()) - 200) < 12
    ds = discover(str(root))
    assert len(ds.train) + len(ds.val) == 6 and not ds.skipped
    images.heif_support.cache_clear()
    # as if it were not installed: neither importable nor registered with Pillow (the test's files needed it)
    monkeypatch.setitem(__import__("sys").modules, "pillow_heif", None)
    monkeypatch.setattr(Image, "ID", [f for f in Image.ID if f != "HEIF"])
    monkeypatch.delitem(Image.OPEN, "HEIF")
    try:
        with pytest.raises(ImageError, match="HEIC photo .*pip install pillow-heif"):
            decode_square(root / "red" / "IMG_0001.HEIC", 32)
        assert decode_square(root / "red" / "b.avif", 32).shape == (32, 32, 3)
    finally:
        images.heif_support.cache_clear()
