"""Where outputs go: a local path or an object-store URL, written atomically either way.

`output_path("data/ingested")` is a local, absolute path (a `pathlib.Path` too);
`output_path("s3://bucket/healthgpt")` or `"gs://..."`, `"memory://..."` is a
universal-pathlib `UPath` on the fsspec filesystem of that protocol (s3fs, gcsfs, adlfs
must be installed for theirs).

Atomicity, per kind of storage:

- Local: write `.<name>.tmp-<random>` in the same directory, flush and fsync, then
  `os.replace` it over the target: readers see the old file or the new one, never a part.
- Object stores: an object becomes visible only when its upload completes, but fsspec
  completes an upload when the file is closed even if the writer failed halfway (its
  `__exit__` calls `close()`), so writing the target key directly could publish a truncated
  object. So the data goes to a temporary key first and is moved onto the target only after
  a successful close (a server-side copy on S3/GCS, which is atomic for readers); on failure
  the temporary key is deleted.
- Directories: object stores have no atomic directory rename. A dataset there is complete
  when its `_manifest.json` (written last, atomically, listing every shard with its hash)
  exists; readers read the files the manifest names rather than listing the prefix.
  Locally, `atomic_directory` swaps whole directories.

This module is the only place that renames a file or directory into place
(`move_into_place`); every writer in the project goes through it. It also owns the other
small things writers share: JSON with deterministic bytes, a file's sha256, and telling a
leftover of a killed writer from one of a live writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from upath import UPath

LOCAL_PROTOCOLS = ("", "file", "local")
# Leftovers of other hosts (pods sharing a volume) are only removed after this long, since
# their process ids mean nothing here.
FOREIGN_LEFTOVER_AGE_S = 24 * 3600
_HOST = socket.gethostname().replace("-", "_").replace(".", "_") or "host"


def output_path(url_or_path: str | os.PathLike[str]) -> UPath:
    """A `UPath` for a local path (made absolute) or for a URL with a protocol."""
    path = url_or_path if isinstance(url_or_path, UPath) else UPath(url_or_path)
    if path.protocol in LOCAL_PROTOCOLS:
        return UPath(Path(path.path if path.protocol else os.fspath(path)).absolute())
    return path


def is_local(path: UPath) -> bool:
    return path.protocol in LOCAL_PROTOCOLS


def _temporary_sibling(path: UPath) -> UPath:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def move_into_place(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename a finished local file or directory over `target` in one step: the one rename
    of the project, so every atomic write is one of the helpers below."""
    os.replace(source, target)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary local path beside `dest` for a writer that takes a file name (Parquet,
    safetensors): moved onto `dest` when the block succeeds, removed when it fails."""
    target = Path(os.fspath(output_path(dest)))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(os.fspath(_temporary_sibling(output_path(target))))
    try:
        yield tmp
        move_into_place(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `dest` for writing ("wb" or "w"); it appears complete on success, else unchanged."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', not {mode!r}")
    target = output_path(dest)
    if is_local(target):
        with atomic_path(target) as tmp, open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        return
    tmp = _temporary_sibling(target)
    fs = target.fs
    try:
        with fs.open(tmp.path, mode) as handle:
            yield handle
        fs.mv(tmp.path, target.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(tmp.path)
        raise


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> UPath:
    with atomic_open(dest, "wb") as handle:
        handle.write(data)
    return output_path(dest)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> UPath:
    with atomic_open(dest, "w") as handle:
        handle.write(text)
    return output_path(dest)


def upload_file(local: str | os.PathLike[str], dest: str | os.PathLike[str]) -> UPath:
    """Copy a finished local file (a shard written by ShardWriter) to `dest`, atomically."""
    target = output_path(dest)
    if is_local(target):
        with open(local, "rb") as source, atomic_open(target, "wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
        return target
    tmp = _temporary_sibling(target)
    try:
        target.fs.put_file(os.fspath(local), tmp.path)
        target.fs.mv(tmp.path, target.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            target.fs.rm_file(tmp.path)
        raise
    return target


def write_json(dest: str | os.PathLike[str], payload: Any) -> UPath:
    """Write JSON atomically with sorted keys and a final newline (deterministic bytes)."""
    return atomic_write_text(
        dest, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes (read into one reused buffer: a fresh 1 MB block per
    read page-faulted a shard's size in again)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --- directories -----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(target: Path, staging: Path | None = None) -> Iterator[Path]:
    """Build a directory's new contents in a private staging directory, then swap it in.

    On error the staging directory is removed and `target` is left as it was. The swap runs
    under a file lock, so concurrent writers take turns, and is crash-safe at every instant:
    on Linux the two directories are exchanged in one `renameat2(RENAME_EXCHANGE)` call, so
    `target` always names a complete version; where the file system cannot exchange, the
    old version is renamed aside and the new one in, and a crash between the two renames
    is repaired by `recover_swap` (the next writer of `target` renames the old version
    back before anything else). `staging` names the staging directory where its owner
    cleans leftovers by its own naming rule (training checkpoints).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging or leftover_path(target, "staging")
    staging.mkdir()
    try:
        yield staging
        with swap_lock(target):
            recover_swap(target)
            old = _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def swap_lock(target: Path) -> Iterator[None]:
    """The lock under which writers of `target` swap, recover and clean, one at a time."""
    with open(target.with_name(f".{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Make `staging` the `target`; returns where the old version now is (to remove)."""
    if not target.exists():
        move_into_place(staging, target)
        return None
    if _exchange(staging, target):
        return staging  # the old version now sits at the staging path
    retired = leftover_path(target, "retired")
    move_into_place(target, retired)
    _between_renames()
    move_into_place(staging, target)
    return retired


def _between_renames() -> None:
    """The instant between the two renames of a swap without exchange (a test kills the
    process here to check `recover_swap`)."""


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux `renameat2` with `RENAME_EXCHANGE`); False where
    the platform or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


def recover_swap(target: Path) -> Path | None:
    """Undo a swap that was cut between its two renames: `target` missing and the version
    retired for it still beside it. Renames that version back and returns it. Call under
    `swap_lock` (`output_directory` and `atomic_directory` do)."""
    target = Path(target)
    if target.exists():
        return None
    retired = [p for p in target.parent.glob(f".{target.name}.retired-*") if p.is_dir()]
    if not retired:
        return None
    latest = max(retired, key=lambda p: p.stat().st_ctime_ns)
    move_into_place(latest, target)
    return latest


def leftover_path(target: Path, kind: str) -> Path:
    """`.<name>.<kind>-<host>-<pid>-<random>`: who made it, so cleanup can tell if it's live."""
    return target.with_name(f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def pid_alive(pid: int) -> bool:
    """Does process `pid` of this host still run (so its leftovers may still be in use)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove staging/retired leftovers of `target` left by writers that no longer run.

    On this host a leftover is stale when its process is gone; a live process's staging
    directory may be a concurrent materialization and is kept. Another host's leftovers are
    removed once older than `FOREIGN_LEFTOVER_AGE_S`.
    """
    target = Path(target)
    removed = []
    for kind in ("staging", "retired"):
        for leftover in target.parent.glob(f".{target.name}.{kind}-*"):
            parts = leftover.name[len(f".{target.name}.{kind}-") :].split("-")
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            host, pid = parts[0], int(parts[1])
            if host == _HOST:
                stale = not pid_alive(pid)
            else:
                stale = time.time() - leftover.stat().st_mtime > FOREIGN_LEFTOVER_AGE_S
            if stale:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed
