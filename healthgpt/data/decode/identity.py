"""An image's identity, computed once, where its pixels are at hand.

- Exact: sha256 of the *decoded pixels* (mode, size and raw bytes), not of the PNG bytes, so
  the same picture encoded by two encoders or at two compression levels is still one image.
- Near-duplicate: a 64-bit DCT perceptual hash (`phash64`).

Ingestion already holds every image's pixels when it encodes the PNG, so it records the
identity then (`remember_identities`, `identity_of`) and stores it beside the image in the
ingested shard (`schema.HASH_COLUMNS`). A mixture build then reads identities instead of
decoding every image again, on every rebuild; it decodes only images whose identity is not
stored (ingestions from before the column) and the ones it must transform.

Only numpy, PIL and hashlib: a mixture worker process imports this cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageHash:
    """An image's identity: `key` (hex of the pixel sha256, 128 bits kept) and its phash."""

    key: str
    phash: int

    @property
    def key64(self) -> int:
        """The first 64 bits of the pixel sha256: the compact exact key of the sample index
        (a chance collision among 10^7 images has probability ~3e-6)."""
        return int(self.key[:16], 16)


METHOD = "sha256-pixels/dct64-v1"
"""Names how `hash_image` computes an identity: a stored identity of another method (a
later change to the phash) is not mixed with fresh ones, the image is decoded instead."""
_HEX = frozenset("0123456789abcdef")


def _bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def identity_value(data: bytes) -> dict[str, Any]:
    """The value of a `schema.IMAGE_HASH_TYPE` column for encoded image bytes: their identity
    (`identity_of`), the method, and the sha256 of the bytes it belongs to."""
    digest = hashlib.sha256(data)
    found = _identity_of(data, digest.digest())
    return {
        "key": found.key,
        "phash": found.phash,
        "bytes_sha256": digest.hexdigest()[:32],
        "method": METHOD,
    }


def stored_identity(value: Any, data: bytes) -> ImageHash | None:
    """The identity a record stores for `data`, or None (then decode) unless it is
    well-formed, of this `METHOD`, and stored for exactly these bytes: a value copied to
    another image, forged or damaged is never trusted, at the cost of one sha256."""
    if not isinstance(value, dict) or value.get("method") != METHOD:
        return None
    key, phash, digest = value.get("key"), value.get("phash"), value.get("bytes_sha256")
    if not (isinstance(key, str) and len(key) == 32 and set(key) <= _HEX):
        return None
    if type(phash) is not int or not 0 <= phash < 1 << 64:
        return None
    if not isinstance(digest, str) or digest != _bytes_digest(data):
        return None
    return ImageHash(key, phash)


def pixel_key(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:32]


def _dct_matrix(n: int = 32, k: int = 8) -> np.ndarray:
    """The first `k` rows of the unnormalized DCT-II of size `n` (scipy.fftpack's type 2)."""
    grid = np.arange(n)
    return 2.0 * np.cos(np.pi * np.arange(k)[:, None] * (2 * grid[None, :] + 1) / (2 * n))


_DCT = _dct_matrix()


def phash64(image: Image.Image) -> int:
    """The DCT perceptual hash as an unsigned 64-bit integer.

    imagehash's `phash` steps (grayscale, 32x32, 2D DCT-II, the 8x8 lowest frequencies
    against their median, row-major bits, first bit most significant), with two changes for
    speed: the 32x32 downsample of an image at least 32 pixels a side is a box filter instead
    of LANCZOS (5x cheaper; the hashes differ from imagehash's by 0.2-0.4 bits on average on
    smooth fields and CT-like phantoms, pinned in the tests), and only the 8 needed DCT rows
    are computed, as two small matrix products.
    """
    # A box filter only averages when it shrinks: a side under 32 pixels is resampled as
    # imagehash does, or tiny images would all look alike.
    small_input = image.width < 32 or image.height < 32
    resample = Image.Resampling.LANCZOS if small_input else Image.Resampling.BOX
    small = image.convert("L").resize((32, 32), resample)
    # Rounding absorbs float noise where an exact computation gives ties (flat images).
    low = np.round(_DCT @ np.asarray(small, dtype=np.float64) @ _DCT.T, 6).ravel()
    middle = np.partition(low, (31, 32))
    median = (middle[31] + middle[32]) / 2
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def hash_image(image: Image.Image) -> ImageHash:
    return ImageHash(pixel_key(image), phash64(image))


def hash_png(data: bytes) -> ImageHash:
    """The identity of encoded image bytes, by decoding them."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return hash_image(image)


# --- identities recorded at encoding ---------------------------------------------------------

_REMEMBERED: ContextVar[OrderedDict[bytes, ImageHash] | None] = ContextVar(
    "healthgpt_remembered_identities", default=None
)
REMEMBERED_MAX = 1 << 16  # about 10 MB; more than one source item's images (a volume's slices)


@contextlib.contextmanager
def remember_identities() -> Iterator[None]:
    """Within this block, `note_encoded` keeps the identity of every image encoded, keyed by
    the sha256 of its bytes, for `identity_of` to find without decoding."""
    token = _REMEMBERED.set(OrderedDict())
    try:
        yield
    finally:
        _REMEMBERED.reset(token)


def note_encoded(data: bytes, image: Image.Image) -> None:
    """Record that `data` is the encoding of exactly `image`'s pixels (lossless), when a
    `remember_identities` block asks for it; otherwise nothing is computed."""
    remembered = _REMEMBERED.get()
    if remembered is None:
        return
    remembered[hashlib.sha256(data).digest()] = hash_image(image)
    if len(remembered) > REMEMBERED_MAX:
        remembered.popitem(last=False)


def identity_of(data: bytes) -> ImageHash:
    """The identity of encoded image bytes: as recorded when they were encoded, else by
    decoding them (bytes a reader passed through, or encoded outside the block)."""
    return _identity_of(data, hashlib.sha256(data).digest())


def _identity_of(data: bytes, digest: bytes) -> ImageHash:
    remembered = _REMEMBERED.get()
    hit = remembered.get(digest) if remembered is not None else None
    return hit if hit is not None else hash_png(data)
