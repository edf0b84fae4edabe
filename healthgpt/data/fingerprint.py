"""A source's data version: a fingerprint of its files, so a rebuild follows real changes.

By default it hashes each file's relative path, size and modification time (fast: no file
is read); `content=True` hashes the bytes too, for file systems whose mtimes are unreliable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def iter_files(root: Path):
    """Every regular file under `root`, in a deterministic order (hidden entries skipped)."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(directory) / name


def fingerprint(root: str | Path, content: bool = False) -> str:
    """Hex digest that changes when a file is added, removed, renamed, resized or touched."""
    root = Path(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for path in iter_files(root):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0".encode())
        if content:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        else:
            digest.update(str(stat.st_mtime_ns).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]
