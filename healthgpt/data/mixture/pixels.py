"""The hashing job a mixture worker runs: only numpy, PIL, xxhash and hashlib (through
`healthgpt.data.decode.identity`, where an image's identity is defined), so a spawned worker
imports this (and `parallel`) without polars or pyarrow, about a second of CPU less per
worker and build.
"""

from __future__ import annotations

from typing import NamedTuple

from healthgpt.data.decode.identity import ImageHash, hash_image, phash64, pixel_key

__all__ = ["HashJob", "HashResult", "ImageHash", "hash_image", "phash64", "pixel_key"]


class HashJob(NamedTuple):
    """Hash one PNG in a worker; with `factor` > 0 also its degraded version."""

    png: bytes
    factor: int


class HashResult(NamedTuple):
    original: ImageHash
    degraded: ImageHash | None
    degraded_png: bytes | None = None  # the super-resolution input as the mixture writes it
