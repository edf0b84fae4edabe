"""An image's identity, computed once, where its pixels are at hand.

- Exact: a 128-bit hash (xxh3) of the *decoded pixels* (mode, size and raw bytes), not of the
  PNG bytes, so the same picture encoded by two encoders or at two compression levels is
  still one image. It finds duplicates, it guards nothing: a fast non-cryptographic hash
  serves, where sha256 cost ingestion 1% of its CPU. (A stored identity is used only for the
  bytes whose xxh3-128 it records, `stored_identity`: that catches values copied to another
  image, not a writer who forges both.)
- Near-duplicate: a 64-bit DCT perceptual hash (`phash64`).

Ingestion already holds every image's pixels when it encodes the PNG, so it records the
identity then (`remember_identities`, `identity_of`) and stores it beside the image in the
ingested shard (`schema.HASH_COLUMNS`). A mixture build then reads identities instead of
decoding every image again, on every rebuild; it decodes only images whose identity is not
stored (ingestions from before the column) and the ones it must transform.

Only numpy, PIL, xxhash and hashlib: a mixture worker process imports this cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from PIL import Image


@dataclass(frozen=True)
class ImageHash:
    """An image's identity: `key` (hex of the 128-bit pixel hash) and its phash."""

    key: str
    phash: int

    @property
    def key64(self) -> int:
        """The first 64 bits of the pixel hash: the compact exact key of the sample index
        (a chance collision among 10^7 images has probability ~3e-6)."""
        return int(self.key[:16], 16)


METHOD = "xxh128-pixels/dct64-v2"
"""Names how `hash_image` computes an identity: a stored identity of another method (a
later change to the phash) is not mixed with fresh ones, the image is decoded instead."""
_HEX = frozenset("0123456789abcdef")


def _bytes_digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def identity_value(data: bytes) -> dict[str, Any]:
    """The value of a `schema.IMAGE_HASH_TYPE` column for encoded image bytes: their identity
    (`identity_of`), the method, and the xxh3-128 of the bytes it belongs to. (Not sha256:
    whoever writes a record can write a matching digest of any kind, so the digest binds a
    value to its bytes against copying and shifting, not against forgery; `check_no_leakage`
    hashes written pixels itself. sha256 cost ingestion 0.7% of its CPU.)"""
    found = identity_of(data)
    return {
        "key": found.key,
        "phash": found.phash,
        "bytes_xxh128": _bytes_digest(data),
        "method": METHOD,
    }


def stored_identity(value: Any, data: bytes) -> ImageHash | None:
    """The identity a record stores for `data`, or None (then decode) unless it is
    well-formed, of this `METHOD`, and stored for exactly these bytes: a value copied to
    another image, forged or damaged is never trusted, at the cost of one xxh3 of the bytes.
    A `record/v2` value, bound by a sha256 (`bytes_sha256`), is checked by its sha256: the
    same identity, so an ingestion written before keeps the mixture's fast path."""
    if not isinstance(value, dict) or value.get("method") != METHOD:
        return None
    key, phash = value.get("key"), value.get("phash")
    if not (isinstance(key, str) and len(key) == 32 and set(key) <= _HEX):
        return None
    if type(phash) is not int or not 0 <= phash < 1 << 64:
        return None
    return ImageHash(key, phash) if _bound_to(value, data) else None


def _bound_to(value: dict[str, Any], data: bytes) -> bool:
    if "bytes_xxh128" in value:
        digest = value["bytes_xxh128"]
        return isinstance(digest, str) and digest == _bytes_digest(data)
    earlier = value.get("bytes_sha256")
    return isinstance(earlier, str) and earlier == hashlib.sha256(data).hexdigest()[:32]


def pixel_key(image: Image.Image, raw: bytes | None = None) -> str:
    """The exact key of `image`'s pixels; `raw`: its `tobytes()`, where the caller has them.
    A palette image's bytes are indices: its palette and transparency are part of the key,
    or two pictures with the same indices and different colours would be one image."""
    digest = xxhash.xxh3_128(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes() if raw is None else raw)
    if image.mode in ("P", "PA"):
        digest.update(bytes(image.getpalette() or ()))
        digest.update(repr(image.info.get("transparency")).encode())
    return digest.hexdigest()


def _dct_matrix(n: int = 32, k: int = 8) -> np.ndarray:
    """The first `k` rows of the unnormalized DCT-II of size `n` (scipy.fftpack's type 2)."""
    grid = np.arange(n)
    return 2.0 * np.cos(np.pi * np.arange(k)[:, None] * (2 * grid[None, :] + 1) / (2 * n))


_DCT = _dct_matrix()
_DCT_T = np.ascontiguousarray(_DCT.T)


def phash64(image: Image.Image) -> int:
    """The DCT perceptual hash as an unsigned 64-bit integer.

    imagehash's `phash` steps (grayscale, 32x32, 2D DCT-II, the 8x8 lowest frequencies
    against their median, row-major bits, first bit most significant), with two changes for
    speed: the 32x32 downsample of an image at least 32 pixels a side is a box filter instead
    of LANCZOS (5x cheaper; an exact block average where the sides are multiples of 32; the
    hashes differ from imagehash's by 0.2-0.4 bits on average on smooth fields and CT-like
    phantoms, pinned in the tests), and only the 64 needed DCT coefficients are computed.
    """
    return phashes([_thumbnail(image)])[0]


def _thumbnail(image: Image.Image) -> Image.Image:
    """The 32x32 grayscale picture the phash is computed from."""
    gray = image.convert("L")
    width, height = gray.size
    if width < 32 or height < 32:
        # A box filter only averages when it shrinks: a side under 32 pixels is resampled as
        # imagehash does, or tiny images would all look alike.
        return gray.resize((32, 32), Image.Resampling.LANCZOS)
    if width % 32 == 0 and height % 32 == 0:
        return gray.reduce((width // 32, height // 32))
    return gray.resize((32, 32), Image.Resampling.BOX)


def phashes(thumbnails: list[Image.Image]) -> list[int]:
    """The phash of each `_thumbnail`, in one vectorized pass.

    Batched because each numpy call costs 30-50 us where it runs between an image's decode
    and encode (its code and data have left the CPU cache), against 2-10 us in a loop: one
    image at a time, these few products cost twice the thumbnail itself.
    """
    pixels = np.frombuffer(b"".join(t.tobytes() for t in thumbnails), np.uint8)
    # D @ X @ D.T per image: the 8x8 lowest frequencies, from two 2 kB matrices. Rounding
    # absorbs float noise where an exact computation gives ties (flat images).
    low = np.round(_DCT @ pixels.reshape(-1, 32, 32) @ _DCT_T, 6).reshape(-1, 64)
    middle = np.partition(low, (31, 32), axis=1)
    median = (middle[:, 31] + middle[:, 32]) / 2
    return np.packbits(low > median[:, None], axis=1).view(">u8").ravel().tolist()


def hash_image(image: Image.Image, raw: bytes | None = None) -> ImageHash:
    return ImageHash(pixel_key(image, raw), phash64(image))


def hash_png(data: bytes) -> ImageHash:
    """The identity of encoded image bytes, by decoding them."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return hash_image(image)


# --- identities recorded at encoding ---------------------------------------------------------


@dataclass(frozen=True)
class _Noted:
    """An identity noted at encoding whose phash is not computed yet: computed for all noted
    images together (`phashes`) when the first of them is asked for."""

    key: str
    thumbnail: Image.Image


class _Remembered:
    """Identities noted within one `remember_identities` block, by `_bytes_key`: bounded,
    oldest first out."""

    def __init__(self) -> None:
        self.known: OrderedDict[bytes, ImageHash | _Noted] = OrderedDict()
        self.pending: list[bytes] = []

    def note(self, bytes_key: bytes, noted: _Noted) -> None:
        self.known[bytes_key] = noted
        self.pending.append(bytes_key)
        if len(self.known) > REMEMBERED_MAX:
            self.known.popitem(last=False)
        if len(self.pending) >= PENDING_MAX:
            self._complete()

    def get(self, bytes_key: bytes) -> ImageHash | None:
        hit = self.known.get(bytes_key)
        if type(hit) is _Noted:
            self._complete()
            hit = self.known.get(bytes_key)
        return hit if type(hit) is ImageHash else None

    def _complete(self) -> None:
        waiting = [(k, v) for k in self.pending if type(v := self.known.get(k)) is _Noted]
        found = phashes([noted.thumbnail for _, noted in waiting]) if waiting else []
        self.pending = []
        for (bytes_key, noted), phash in zip(waiting, found, strict=True):
            self.known[bytes_key] = ImageHash(noted.key, phash)


_REMEMBERED: ContextVar[_Remembered | None] = ContextVar(
    "healthgpt_remembered_identities", default=None
)
REMEMBERED_MAX = 1 << 16  # about 10 MB; more than one source item's images (a volume's slices)
PENDING_MAX = 256  # thumbnails waiting for their phash: about 0.5 MB


@contextlib.contextmanager
def remember_identities() -> Iterator[None]:
    """Within this block, `note_encoded` keeps the identity of every image encoded, keyed by
    a 128-bit hash of its bytes (`_bytes_key`), for `identity_of` to find without decoding."""
    token = _REMEMBERED.set(_Remembered())
    try:
        yield
    finally:
        _REMEMBERED.reset(token)


def identity_to_note(image: Image.Image, raw: bytes) -> _Noted | None:
    """What `note_encoded` keeps of `image` (whose `tobytes()` is `raw`) when a
    `remember_identities` block is open, else None and nothing is computed: its pixel key and
    phash thumbnail. Called before the PNG is encoded, while the pixels are still in the CPU
    cache: after the encoder has run, the same work cost 1.2-1.5 times as much."""
    if _REMEMBERED.get() is None:
        return None
    return _Noted(pixel_key(image, raw), _thumbnail(image))


def note_encoded(data: bytes, noted: _Noted | None) -> None:
    """Record that `data` is the lossless encoding of the pixels `noted` describes (from
    `identity_to_note`; None: nothing to record)."""
    remembered = _REMEMBERED.get()
    if remembered is not None and noted is not None:
        remembered.note(_bytes_key(data), noted)


def identity_of(data: bytes) -> ImageHash:
    """The identity of encoded image bytes: as recorded when they were encoded, else by
    decoding them (bytes a reader passed through, or encoded outside the block)."""
    remembered = _REMEMBERED.get()
    hit = remembered.get(_bytes_key(data)) if remembered is not None else None
    return hit if hit is not None else hash_png(data)


_BYTES_KEY_SEED = secrets.randbits(64)


def _bytes_key(data: bytes) -> bytes:
    """Which remembered identity belongs to `data`: a 128-bit hash of the bytes (xxh3, a
    tenth of sha256's cost). Seeded at random per process, as the remembered identities
    live only in this process: nobody can prepare two PNGs whose keys collide."""
    return xxhash.xxh3_128_digest(data, seed=_BYTES_KEY_SEED)
