"""Stable chunks of a large source: which chunk an item belongs to, forever.

A source of 300k+ items (MIMIC-CXR) is ingested in chunks so that a failure costs one chunk
and new files rebuild only the chunks they land in. That needs an assignment where:

- an item's chunk depends on its stable key (its path relative to the source root) and the
  chunk count only: never on the listing order or on the other items, so adding, removing
  or reordering items never moves an existing item;
- chunks are balanced whatever the key distribution (long common prefixes, sequential ids);
- growing the chunk count later (the source outgrew its plan) moves as few items as
  possible, and only into the new chunks.

Jump consistent hashing (Lamping and Veach, 2014, arXiv:1406.2294) on a BLAKE2b digest of the
key does all three: uniform, pure, and going from n to m chunks moves only the (m - n) / m
of items that belong to the new chunks. Python's `hash()` would not do: it is salted per
process. The method is versioned (`METHOD`) and pinned by golden values in the tests.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

METHOD = "jump-blake2b64-v1"
DEFAULT_ITEMS_PER_CHUNK = 50_000
_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = (1 << 64) - 1


def key_hash(key: str) -> int:
    """A 64-bit hash of `key` that is the same in every process, machine and Python version."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogateescape"), digest_size=8, person=b"healthgpt"
    ).digest()
    return int.from_bytes(digest, "little")


def jump_hash(key: int, n_chunks: int) -> int:
    """Jump consistent hash of a 64-bit integer into `[0, n_chunks)`."""
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
    b, j = -1, 0
    while j < n_chunks:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def chunk_of(key: str, n_chunks: int) -> int:
    """The chunk of one item."""
    return jump_hash(key_hash(key), n_chunks)


def key_hashes(keys: Iterable[str]) -> np.ndarray:
    """`key_hash` of every key, as uint64."""
    return np.fromiter((key_hash(k) for k in keys), dtype=np.uint64)


def jump_hash_array(hashes: np.ndarray, n_chunks: int) -> np.ndarray:
    """Vectorized `jump_hash` (same results)."""
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
    state = np.asarray(hashes, dtype=np.uint64).copy()
    result = np.full(len(state), -1, dtype=np.int64)
    j = np.zeros(len(state), dtype=np.int64)
    active = np.arange(len(state))
    multiplier, one = np.uint64(_JUMP_MULTIPLIER), np.uint64(1)
    while active.size:
        result[active] = j[active]
        state[active] = state[active] * multiplier + one  # uint64 arithmetic wraps mod 2**64
        top = (state[active] >> np.uint64(33)).astype(np.float64) + 1.0
        j[active] = ((result[active] + 1).astype(np.float64) * (2.0**31 / top)).astype(np.int64)
        active = active[j[active] < n_chunks]
    return result


def assign_chunks(keys: Iterable[str], n_chunks: int) -> np.ndarray:
    """Chunks of many items at once (same result as `chunk_of` on each)."""
    return jump_hash_array(key_hashes(keys), n_chunks)


def n_chunks_for(expected_items: int, items_per_chunk: int = DEFAULT_ITEMS_PER_CHUNK) -> int:
    """A chunk count for a source's expected size; fix it in the source's manifest."""
    return max(1, math.ceil(expected_items / items_per_chunk))


@dataclass(frozen=True)
class ChunkPlan:
    """How one source is split: `n_chunks` fixed per source (in its data manifest)."""

    source: str
    n_chunks: int
    method: str = METHOD

    def __post_init__(self) -> None:
        if self.n_chunks < 1:
            raise ValueError(f"{self.source}: n_chunks must be >= 1, got {self.n_chunks}")
        if self.method != METHOD:
            raise ValueError(f"{self.source}: unknown chunk method {self.method!r}")

    @property
    def width(self) -> int:
        return max(3, len(str(self.n_chunks - 1)))

    def label(self, index: int) -> str:
        """Zero-padded id of chunk `index` ("000", "001", ...): text order is numeric order."""
        return f"{index:0{self.width}d}"

    def chunk_ids(self) -> list[str]:
        return [self.label(index) for index in range(self.n_chunks)]

    def chunk_id(self, key: str) -> str:
        return self.label(chunk_of(key, self.n_chunks))

    def index(self, chunk_id: str) -> int:
        index = int(chunk_id)
        if not 0 <= index < self.n_chunks:
            raise ValueError(f"{self.source}: no chunk {chunk_id!r} among {self.n_chunks}")
        return index

    def member(self, chunk_id: str) -> Callable[[str], bool]:
        """A predicate for a reader: does the item with this key belong to `chunk_id`?"""
        index = self.index(chunk_id)
        return lambda key: chunk_of(key, self.n_chunks) == index

    def select(self, keys: Sequence[str], chunk_id: str) -> list[str]:
        """The keys of one chunk, in their original order."""
        index = self.index(chunk_id)
        chunks = assign_chunks(keys, self.n_chunks)
        return [key for key, chunk in zip(keys, chunks, strict=True) if chunk == index]
