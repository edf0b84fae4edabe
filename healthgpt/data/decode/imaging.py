"""2D image handling shared by every reader: decode, normalize to 8 bits, resize, encode PNG.

Volume and DICOM decoding live in `dicom.py` and `nifti.py`; they hand 2D float or uint8
arrays to the functions here, so every output image goes through one encoder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from healthgpt.data.decode.errors import BadInput

Image.MAX_IMAGE_PIXELS = 200_000_000  # whole-slide crops are large but not hostile


def load_image_file(path: Path) -> Image.Image:
    """Open a JPEG/PNG from disk, fully decoded; unreadable files raise `BadInput`."""
    if not path.is_file():
        raise BadInput(f"image file missing: {path.name}")
    if path.stat().st_size == 0:
        raise BadInput(f"image file is empty (0 bytes): {path.name}")
    return load_image_bytes(path.read_bytes(), path.name)


def load_image_bytes(data: bytes, name: str = "image") -> Image.Image:
    """Decode encoded image bytes; truncated or undecodable data raises `BadInput`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"undecodable image {name}: {exc}") from exc
    return image


def to_display(image: Image.Image) -> Image.Image:
    """Grayscale stays L, everything else becomes RGB (drops alpha, palettes, 16-bit)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(scale_to_uint8(np.asarray(image, dtype=np.float32)))
    if image.mode in ("1", "LA"):
        return image.convert("L")
    return image.convert("RGB")


def scale_to_uint8(
    array: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Linearly map [lo, hi] (default: the array's min and max) to [0, 255], clipping."""
    array = np.asarray(array, dtype=np.float32)
    lo = float(np.min(array)) if lo is None else lo
    hi = float(np.max(array)) if hi is None else hi
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (np.clip(array, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def percentile_normalize(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """MR intensities have no absolute scale: map the [low, high] percentiles to [0, 255]."""
    array = np.asarray(array, dtype=np.float32)
    nonzero = array[array > 0]
    values = nonzero if nonzero.size else array.ravel()
    lo, hi = np.percentile(values, [low, high])
    return scale_to_uint8(array, float(lo), float(hi))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Pad to square (black) keeping the aspect ratio, then resize to `size` x `size`.

    Padding rather than cropping keeps every anatomical structure in view, which matters
    for questions about laterality and position.
    """
    width, height = image.size
    if (width, height) == (size, size):
        return image
    side = max(width, height)
    if width != height:
        canvas = Image.new(image.mode, (side, side), 0)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return image.resize((size, size), Image.Resampling.BICUBIC)


def encode_png(image: Image.Image | np.ndarray, size: int | None, compress_level: int = 1) -> bytes:
    """The single way images become bytes in a shard: normalized mode, square size, PNG."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            image = scale_to_uint8(image)
        image = Image.fromarray(image)
    image = to_display(image)
    if size:
        image = resize_square(image, size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def image_file_to_png(path: Path, size: int | None, compress_level: int = 1) -> bytes:
    """Decode a JPEG/PNG file and re-encode it as a normalized PNG."""
    return encode_png(load_image_file(path), size, compress_level)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes from a shard back to a numpy array."""
    return np.asarray(Image.open(io.BytesIO(data)))


def decode_rgb(data: bytes | None) -> Image.Image | None:
    """Encoded bytes -> RGB PIL image (what vision towers expect), or None for no image."""
    if not data:
        return None
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
