"""2D image handling shared by every reader: decode, normalize to 8 bits, resize, encode PNG.

Output PNGs carry pixels only: no ancillary chunk (ICC profile, EXIF, text) of the source.

Volume and DICOM decoding live in `dicom.py` and `nifti.py`; they hand 2D float or uint8
arrays to the functions here, so every output image goes through one encoder.
"""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from healthgpt.data.decode.identity import identity_to_note, note_encoded
from healthgpt.data.errors import BadInput
from healthgpt.data.limits import Limits, check, check_working

# Pillow's own bomb guard, a backstop: `Limits.max_image_pixels` is checked first, from the
# header, and names the limit in the quarantine reason.
Image.MAX_IMAGE_PIXELS = 200_000_000

_JPEG_GRAY = 128  # what libjpeg leaves in every block after the entropy data ran out
# Bytes slipped in before a JPEG's EOI to see whether the decoder reads past the data (no
# 0xFF, so no marker can appear in them).
_JPEG_PROBE = bytes(random.Random(0).randrange(0, 255) for _ in range(256))


def load_image_file(path: Path, limits: Limits | None = None) -> Image.Image:
    """Open a JPEG/PNG from disk, fully decoded; unreadable files raise `BadInput`."""
    limits = limits or Limits.from_options()
    if not path.is_file():
        raise BadInput(f"image file missing: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise BadInput(f"image file is empty (0 bytes): {path.name}")
    check("max_decompressed_bytes", size, limits.max_decompressed_bytes, "image file bytes")
    return load_image_bytes(path.read_bytes(), path.name, limits)


def load_image_bytes(data: bytes, name: str = "image", limits: Limits | None = None) -> Image.Image:
    """Decode encoded image bytes; truncated, oversized or undecodable data raises `BadInput`.

    The pixel count the header declares is checked before decoding, and a JPEG whose
    entropy-coded data ends early is refused even when an EOI marker follows (libjpeg would
    fill the missing part with gray and report success).
    """
    limits = limits or Limits.from_options()
    with warnings.catch_warnings():  # `max_image_pixels` is the check that counts
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _load_image_bytes(data, name, limits)


def _load_image_bytes(data: bytes, name: str, limits: Limits) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        check(
            "max_image_pixels",
            width * height,
            limits.max_image_pixels,
            f"image declares {width} x {height} =",
        )
        check_working(
            image_working_bytes(width, height, image.mode, image.format),
            limits,
            f"decoding {width} x {height} {image.mode}",
        )
        image.load()
    except BadInput:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInput(f"image exceeds limit max_image_pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"undecodable image {name}: {exc}") from exc
    if image.format == "JPEG" and not jpeg_complete(data, image):
        raise BadInput(
            f"truncated JPEG {name}: the entropy-coded data ends before the last block "
            "(the decoder would fill the rest with gray)"
        )
    return image


_FLOAT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # normalised through float32 copies
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
_BYTES_PER_PIXEL |= {"I;16": 2, "I;16B": 2, "I;16L": 2}  # others (RGBA, CMYK, I, F): 4


def image_working_bytes(width: int, height: int, mode: str, image_format: str | None) -> int:
    """Bytes decoding and normalising a `mode` image of `width` x `height` holds at its peak,
    from the header alone: the decoded pixels at their real bytes per pixel (16-bit is 2),
    a JPEG's second decode and the two byte copies the truncation check compares, the
    float32 copies `scale_to_uint8` makes for 16-bit and float modes, and the square canvas
    `resize_square` pads to."""
    pixels = width * height
    per_pixel = _BYTES_PER_PIXEL.get(mode, 4)
    copies = 4 if image_format == "JPEG" else 2
    total = pixels * per_pixel * copies
    if mode in _FLOAT_MODES:
        total += pixels * 4 * 4
    side = max(width, height)
    return total + side * side * min(per_pixel, 3)


def jpeg_complete(data: bytes, image: Image.Image) -> bool:
    """Did decoding `data` (into `image`) use real data for every block?

    When libjpeg runs out of entropy-coded data (a file cut short, an EOI marker after it or
    not) it fills every later block with gray and succeeds. So: for a baseline grayscale or
    RGB image whose last block is not exactly that gray, the data reached the end. Otherwise
    decode again with bytes slipped in before the EOI: a complete file never reads them, so
    the pixels are identical; a truncated one decodes them, and the pixels differ.
    """
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    if progressive and not progressive_scans_complete(data):
        return False
    if not progressive and image.mode in ("L", "RGB"):
        width, height = image.size
        corner = image.crop((max(0, width - 8), max(0, height - 8), width, height))
        if corner.tobytes().count(_JPEG_GRAY) != len(corner.tobytes()):
            return True
    end = _jpeg_scan_end(data)
    if end is None:
        return False
    try:
        probe = Image.open(io.BytesIO(data[:end] + _JPEG_PROBE + data[end:]))
        probe.load()
    except Exception:  # noqa: BLE001 - failing on the probe bytes means it read them
        return False
    return probe.tobytes() == image.tobytes()


def progressive_scans_complete(data: bytes) -> bool:
    """Do a progressive JPEG's scans bring every coefficient (0..63) of every component to
    full precision (successive approximation down to bit 0)?

    A progressive file cut at a scan boundary, with an EOI after it, decodes without error
    to a blurred image: the later scans are simply missing. Every complete scan script
    (libjpeg's default and any that encodes all the data) ends with each coefficient at
    Al = 0. Limit of the rule: an encoder that deliberately omits high frequencies writes a
    file this refuses, and a cut inside a scan is left to the entropy-data check.
    """
    components: list[int] = []
    precision: dict[int, list[int | None]] = {}
    for code, _, payload in _jpeg_segments(data):
        if code == 0xC2 and len(payload) >= 6:  # SOF2: the components of the frame
            count = payload[5]
            components = [payload[6 + 3 * i] for i in range(count) if 6 + 3 * i < len(payload)]
            precision = {c: [None] * 64 for c in components}
        elif code == 0xDA and payload:  # SOS: Ns, Ns x (Cs, tables), Ss, Se, Ah/Al
            count = payload[0]
            tail = payload[1 + 2 * count : 4 + 2 * count]
            if len(tail) < 3:
                return False
            start, end, low = tail[0], min(tail[1], 63), tail[2] & 0x0F
            for i in range(count):
                for k in range(start, end + 1):
                    coefficients = precision.get(payload[1 + 2 * i])
                    if coefficients is not None:
                        coefficients[k] = low
    return bool(components) and all(all(bit == 0 for bit in precision[c]) for c in components)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Each marker segment of a JPEG as (marker code, offset, payload), entropy-coded data skipped,
    up to the EOI (code 0xD9, empty payload); stops at the first byte that is no marker."""
    pos = 2  # after SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return
        code = data[pos + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code == 0xD9:
            yield code, pos, b""
            return
        if code == 0x01 or 0xD0 <= code <= 0xD8:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        yield code, pos, bytes(data[pos + 4 : end])
        if code != 0xDA:
            pos = end
            continue
        pos = _next_marker(data, end)  # entropy-coded data: skip stuffed 0xFF00 and RSTn
        if pos is None:
            return


def _jpeg_scan_end(data: bytes) -> int | None:
    """Offset of the EOI marker that ends the last scan, or None when there is none."""
    return next((pos for code, pos, _ in _jpeg_segments(data) if code == 0xD9), None)


def _next_marker(data: bytes, pos: int) -> int | None:
    while (pos := data.find(b"\xff", pos)) != -1 and pos + 1 < len(data):
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1
            continue
        return pos
    return None


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
    # A copy holding the pixels and nothing else: no ICC profile, EXIF, XMP, text chunks or
    # resolution copied from the source (they can carry names, dates and device ids), so the
    # PNG holds only IHDR, IDAT and IEND.
    raw = image.tobytes()
    pixels = Image.frombytes(image.mode, image.size, raw)
    found = identity_to_note(pixels, raw)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=compress_level)
    data = buffer.getvalue()
    note_encoded(data, found)
    return data


def image_file_to_png(
    path: Path, size: int | None, compress_level: int = 1, limits: Limits | None = None
) -> bytes:
    """Decode a JPEG/PNG file and re-encode it as a normalized PNG."""
    return encode_png(load_image_file(path, limits), size, compress_level)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes from a shard back to a numpy array."""
    return np.asarray(Image.open(io.BytesIO(data)))


def decode_rgb(data: bytes | None) -> Image.Image | None:
    """Encoded bytes -> RGB PIL image (what vision towers expect), or None for no image."""
    if not data:
        return None
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
