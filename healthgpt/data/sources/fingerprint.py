"""A source's data version: a fingerprint of its files, so a rebuild follows real changes.

By default it hashes each file's relative path, size and modification time (fast: no file
is read); `content=True` hashes the bytes too, for file systems whose mtimes are unreliable.

A chunked source has one data version per chunk (`chunk_fingerprints`): a file belongs to
the chunk of its item unit (the reader's `chunk_key`), and shared files (listings, metadata
tables) to every chunk, so a changed image moves one chunk's version and a changed listing
moves them all, unless the reader splits that listing by row (`listing_rows`: MIMIC-CXR's
tables), in which case added or changed rows move only their chunks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from healthgpt.data.sources.chunks import chunk_of

# A reader's `listing_rows`: a shared file's rows as (chunk key or None, bytes), or None.
ListingRows = Callable[[str, Path], Iterator[tuple[str | None, bytes]] | None]


def iter_files(root: Path):
    """Every regular file under `root`, hidden ones too (the folder readers read them and
    quarantine what is not an image), in a deterministic order."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(directory) / name


def _add_file(digest: Any, path: Path, rel: str, content: bool) -> None:
    stat = path.stat()
    # surrogateescape: a non-UTF-8 file name is hashed by its bytes rather than failing
    digest.update(f"{rel}\0{stat.st_size}\0".encode("utf-8", "surrogateescape"))
    if content:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    else:
        digest.update(str(stat.st_mtime_ns).encode())
    digest.update(b"\n")


def fingerprint(root: str | Path, content: bool = False) -> str:
    """Hex digest that changes when a file is added, removed, renamed, resized or touched."""
    root = Path(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for path in iter_files(root):
        _add_file(digest, path, path.relative_to(root).as_posix(), content)
    return digest.hexdigest()[:32]


def chunk_fingerprints(
    root: str | Path,
    chunk_key: Callable[[str], str | None],
    n_chunks: int,
    content: bool = False,
    listing_rows: ListingRows | None = None,
) -> list[str]:
    """One fingerprint per chunk: its own files', plus its rows of the shared tables a reader
    can split (`listing_rows`, always read), plus the other shared files'."""
    root = Path(root)
    if not root.is_dir():
        return ["missing"] * n_chunks
    shared = hashlib.sha256()
    own = [hashlib.sha256() for _ in range(n_chunks)]
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        key = chunk_key(rel)
        rows = listing_rows(rel, path) if key is None and listing_rows else None
        if rows is None:
            _add_file(shared if key is None else own[chunk_of(key, n_chunks)], path, rel, content)
            continue
        for row_key, row in rows:
            digest = shared if row_key is None else own[chunk_of(row_key, n_chunks)]
            digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + row + b"\n")
    common = shared.hexdigest()
    return [hashlib.sha256(f"{common}{d.hexdigest()}".encode()).hexdigest()[:32] for d in own]
