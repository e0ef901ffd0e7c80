"""Turn any image file a user might have into an RGB uint8 square, or say exactly why not.

Every path in tunevision (training cache, evaluation, prediction, serving) goes through
`decode_square`, so the pixels a model sees at predict time are the pixels it saw in training.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .tif .tiff .webp .ppm .pgm .pbm .pnm .ico .tga .heic .heif .avif".split()
)
# Pillow's own decompression-bomb threshold (about 89 megapixels); a 12 MP phone photo is far below.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageError(ValueError):
    """The file cannot be used as an image; the message is the reason shown to the user."""


def resolve_fit(choice: str, multilabel: bool) -> str:
    """`--resize auto`: squash for multi-label data, whose labels sit anywhere in the photo (a centre square
    can cut the sea off a beach), crop otherwise."""
    return choice if choice != "auto" else "squash" if multilabel else "crop"


def resize_for(image_size: int, crop_pct: float) -> int:
    """The decoded square's side for an `image_size` input: timm's eval convention, resize to image_size /
    crop_pct, then centre-crop image_size."""
    return max(image_size, round(image_size / crop_pct))


def image_size_for(input_size: int, crop_pct: float, cached: bool) -> int:
    """The input side a backbone trains at by default. Frozen (cached) features are taken at 8/7 of the
    pretraining size (FixRes: RandomResizedCrop pretraining shows objects larger than a same-size centre crop
    does). Measured with Lite0: hymenoptera 94.8 -> 96.1 %, flowers5 75.1 -> 76.5 % (no views). Fine-tuning trains
    at the backbone's own size."""
    if cached and crop_pct < 1:
        return int(round(input_size * 8 / 7 / 32) * 32)
    return input_size


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# the first bytes of the formats a photo folder holds, for files whose name does not say (`photo`, `img.download`)
MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


# ISO media brands of HEIF stills (an iPhone's HEIC photos) and AVIF, after "ftyp" at byte 4
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")


def is_image_content(path: str | Path) -> bool:
    """Whether a file starts as a JPEG, PNG, GIF, BMP, TIFF, WebP, HEIC or AVIF does (16 bytes read)."""
    head = first_bytes(path)
    return head.startswith(MAGIC) or head[:4] == b"RIFF" and head[8:12] == b"WEBP" or \
        head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS + AVIF_BRANDS


def first_bytes(source: str | Path | BinaryIO, size: int = 16) -> bytes:
    """A file's or a stream's first `size` bytes, a stream left where it was: what a file's format is told by
    (b"" where they cannot be had, or from a stream that cannot seek back)."""
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as f:
                return f.read(size)
        except OSError:
            return b""
    if not source.seekable():
        return b""
    at = source.tell()
    head = source.read(size)
    source.seek(at)
    return head


@functools.cache
def heif_support() -> bool:
    """Pillow reads HEIC through pillow-heif's plugin, registered with Pillow at the first HEIC photo (not at import:
    most data has none). False where pillow-heif is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha composited on white, 16-bit scaled (not clipped) to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit PNGs open as "I"/"I;16"; their range is 0..65535, so scale instead of clipping.
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _open(source: str | Path | BinaryIO) -> Image.Image:
    """Image.open; a HEIC photo Pillow does not know is opened again with pillow-heif's plugin, which the first
    one registers: its head is read only then, not before every image's decode (a second open of each file)."""
    at = source.tell() if not isinstance(source, (str, Path)) and source.seekable() else None
    try:
        return Image.open(source)
    except UnidentifiedImageError:
        if at is not None:
            source.seek(at)
        head = first_bytes(source)
        if head[4:8] != b"ftyp" or head[8:12] not in HEIF_BRANDS:
            raise
        if not heif_support():
            raise ImageError("a HEIC photo (an iPhone's): pip install pillow-heif to read it, or save it as JPEG") \
                from None
        return Image.open(source)  # with the plugin: read, or still unidentified (a damaged file)


def open_image(source: str | Path | bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: int | None = None, upright: bool = True) -> Image.Image:
    """Open, size-check, decode (downscaled in the DCT domain for JPEG) and upright (EXIF orientation) an image."""
    if isinstance(source, (str, Path)) and Path(source).stat().st_size == 0:
        raise ImageError("empty file (0 bytes)")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        im = _open(source)
    except Image.DecompressionBombError as e:
        raise ImageError(f"too many pixels (decompression bomb?): {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image (unknown or corrupt format)") from None
    except OSError as e:
        raise ImageError(f"cannot open: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"{w}x{h} is {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit "
                         "(decompression bomb guard; raise --max-pixels if the image is genuine)")
    if w < 1 or h < 1:
        raise ImageError(f"degenerate size {w}x{h}")
    try:
        if draft_size and im.format == "JPEG":
            # DCT-domain downscaling: decoding a 4000x3000 photo at 1/8 scale is ~20x cheaper.
            # EXIF rotation swaps axes later, so ask for the size on both axes.
            im.draft(None, (draft_size, draft_size))
        im.load()
        if upright:
            im = ImageOps.exif_transpose(im)
    except Exception as e:  # Pillow raises many types for damaged data; all mean "unusable file".
        raise ImageError(f"corrupt or truncated image data ({e})") from None
    return im


FITS = ("crop", "squash")  # how a photo becomes a square: its centre square, or all of it stretched


def square(im: Image.Image, size: int, fit: str = "crop") -> np.ndarray:
    """One resampling step to (size, size): `crop` resizes the shorter side and keeps the centre square;
    `squash` keeps the whole photo at the square's aspect (what sits at its edges counts, as labels in a scene)."""
    im = to_rgb(im)
    w, h = im.size
    side = min(w, h)
    box = (0, 0, w, h) if fit == "squash" else ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    out = im.resize((size, size), Image.BICUBIC, box=box)
    return np.array(out, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def decode_square(source: str | Path | bytes | BinaryIO, size: int, *,
                  max_pixels: int = DEFAULT_MAX_PIXELS, fit: str = "crop") -> np.ndarray:
    """(size, size, 3) uint8: the cached form of an image for training, evaluation and prediction."""
    return square(open_image(source, max_pixels=max_pixels, draft_size=size), size, fit)
