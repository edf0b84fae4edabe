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
  Locally, `healthgpt.data.shards.atomic_directory` swaps whole directories.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from upath import UPath

LOCAL_PROTOCOLS = ("", "file", "local")


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


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `dest` for writing ("wb" or "w"); it appears complete on success, else unchanged."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', not {mode!r}")
    target = output_path(dest)
    tmp = _temporary_sibling(target)
    if is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
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
