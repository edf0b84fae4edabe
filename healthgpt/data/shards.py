"""The one way to write Parquet shards: streaming, size-bounded, atomic, deterministic.

- Rows are buffered up to `row_group_bytes` and flushed as a row group, so memory is bounded
  by the buffer, not by the data.
- A shard file is written under a temporary name and renamed when complete.
- A whole dataset directory is built in a private staging directory and swapped into place
  at the end (`atomic_directory`), so readers never see a half-written dataset, a crashed run
  leaves the previous version intact, and two concurrent writers cannot interleave files.
- Same rows in the same order give byte-identical files (fixed writer settings, no
  timestamps or random names inside the files).
- A dataset may live on an object store (`output_directory("s3://bucket/ingested/x")`): it is
  built locally, then published under a version prefix with its manifest written last, and
  readers (`read_manifest`, `shard_paths`, `open_shard`) go through the manifest, so the same
  code reads a local directory and a bucket (see `healthgpt.storage`).
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
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from healthgpt.data.schema import IMAGE_TYPE, hf_features_metadata
from healthgpt.storage import atomic_write_text, is_local, output_path, upload_file

MANIFEST_NAME = "_manifest.json"
PUBLISHED_NAME = "_published"  # in an object-store version prefix: when it was published
# Versions of a dataset on an object store are kept this long after they stop being current.
KEEP_VERSIONS_S = 24 * 3600
# Leftovers of other hosts (pods sharing a volume) are only removed after this long, since
# their process ids mean nothing here.
FOREIGN_LEFTOVER_AGE_S = 24 * 3600
_HOST = socket.gethostname().replace("-", "_").replace(".", "_") or "host"


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: where it is, how many rows, how big, and its content hash."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def under(self, folder: str) -> ShardInfo:
        """The same shard named from a dataset root one `folder` up (manifests list shard
        paths relative to the dataset root: "data/train-00000.parquet")."""
        return replace(self, path=f"{folder}/{self.path}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _leaf_paths(field: pa.Field, prefix: str = "") -> list[str]:
    name = f"{prefix}{field.name}"
    if pa.types.is_struct(field.type):
        return [p for child in field.type for p in _leaf_paths(child, f"{name}.")]
    if pa.types.is_list(field.type):
        return _leaf_paths(field.type.value_field, f"{name}.list.")
    return [name]


def _column_codecs(schema: pa.Schema) -> dict[str, str]:
    """zstd for every column except encoded image bytes, which are already compressed: zstd
    and dictionary encoding on PNG bytes cost time and save nothing."""
    return {
        path: "none"
        if path.endswith(".bytes") and schema.field(path.split(".")[0]).type == IMAGE_TYPE
        else "zstd"
        for field in schema
        for path in _leaf_paths(field)
    }


def _row_bytes(row: dict[str, Any]) -> int:
    """Cheap size estimate of a row: the byte length of its binary and string values."""
    total = 64
    for value in row.values():
        if isinstance(value, (bytes, str)):
            total += len(value)
        elif isinstance(value, dict):
            total += _row_bytes(value)
        elif isinstance(value, list):
            total += sum(_row_bytes(v) if isinstance(v, dict) else 16 for v in value)
    return total


class ShardWriter:
    """Writes rows of one schema to `<directory>/<prefix>-NNNNN.parquet` files.

    Use as a context manager; `shards` lists the finished files after `close()`.
    """

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        prefix: str = "part",
        target_shard_bytes: int = 256 << 20,
        row_group_bytes: int = 32 << 20,
        hf_images: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if hf_images:
            schema = schema.with_metadata(
                {**(schema.metadata or {}), **hf_features_metadata(schema)}
            )
        self.schema = schema
        self.prefix = prefix
        self.target_shard_bytes = target_shard_bytes
        self.row_group_bytes = row_group_bytes
        self.shards: list[ShardInfo] = []
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp_path: Path | None = None
        self._rows_in_shard = 0
        self._bytes_in_shard = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        self._buffer_bytes += _row_bytes(row)
        if self._buffer_bytes >= self.row_group_bytes:
            self._flush()

    def _open(self) -> None:
        if self._writer is None:
            index = len(self.shards)
            self._tmp_path = self.directory / f".{self.prefix}-{index:05d}.parquet.tmp"
            codecs = _column_codecs(self.schema)
            self._writer = pq.ParquetWriter(
                self._tmp_path,
                self.schema,
                compression=codecs,
                use_dictionary=[c for c, codec in codecs.items() if codec != "none"],
                write_statistics=True,
                store_schema=True,
            )

    def _flush(self) -> None:
        if not self._buffer:
            return
        self._open()
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._rows_in_shard += len(self._buffer)
        self._bytes_in_shard += self._buffer_bytes
        self._buffer, self._buffer_bytes = [], 0
        if self._bytes_in_shard >= self.target_shard_bytes:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self._writer.close()
        final = self.directory / f"{self.prefix}-{len(self.shards):05d}.parquet"
        os.replace(self._tmp_path, final)
        self.shards.append(
            ShardInfo(final.name, self._rows_in_shard, final.stat().st_size, file_sha256(final))
        )
        self._writer, self._tmp_path = None, None
        self._rows_in_shard = self._bytes_in_shard = 0

    def close(self) -> list[ShardInfo]:
        self._flush()
        if self._writer is not None:
            self._finish_shard()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
        self._writer, self._tmp_path, self._buffer = None, None, []


def write_table_file(path: Path, table: pa.Table) -> ShardInfo:
    """Write one small table (quarantine, predictions) atomically as a single Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return ShardInfo(path.name, table.num_rows, path.stat().st_size, file_sha256(path))


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically with sorted keys (deterministic bytes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_manifest(directory: Path, shards: Iterable[ShardInfo], **extra: Any) -> Path:
    """The dataset's table of contents, written last: its presence means the set is complete."""
    path = directory / MANIFEST_NAME
    write_json(path, {"shards": [asdict(s) for s in shards], **extra})
    return path


def open_shard(path: str | os.PathLike[str]) -> pq.ParquetFile:
    """The one way to read a shard: without pyarrow's default pre-buffering, which reads a
    whole file into memory at once (280 MB for a 256 MB shard) and so breaks streaming.
    `path` may be a local path or a URL / `UPath` on any fsspec file system."""
    location = output_path(path)
    if is_local(location):
        return pq.ParquetFile(os.fspath(location), pre_buffer=False)
    return pq.ParquetFile(location.open("rb"), pre_buffer=False)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = output_path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST_NAME}: it was never completed")
    return json.loads(path.read_text())


def dataset_root(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Where the manifest's relative paths start: the directory itself, or the version prefix
    a publication to an object store put the files under."""
    return (
        output_path(directory) / manifest["root"] if "root" in manifest else output_path(directory)
    )


def shard_paths(directory: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """The completed shards a dataset's manifest lists (those whose path starts with
    `prefix`, e.g. "stage1/data/train-"), in manifest order. Reading the manifest rather than
    listing files is what makes an object-store copy safe to read while it is replaced."""
    manifest = read_manifest(directory)
    root = dataset_root(directory, manifest)
    return [root / s["path"] for s in manifest["shards"] if s["path"].startswith(prefix)]


def listed_shards(directory: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """The shards under `directory` whose path there starts with `prefix`: through the manifest
    of the dataset it is (an ingested source) or is a folder of (a mixture's `stage3/`), so it
    works on an object store; a local folder outside any dataset is listed instead."""
    location = output_path(directory)
    for root, inside in ((location, ""), (location.parent, f"{location.name}/")):
        try:
            return shard_paths(root, inside + prefix)
        except FileNotFoundError:
            continue
    found = (p for p in location.rglob("*.parquet") if not p.name.startswith("."))
    return sorted(p for p in found if p.relative_to(location).as_posix().startswith(prefix))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Build a directory's new contents in a private staging directory, then swap it in.

    On error the staging directory is removed and `target` is left as it was. The swap runs
    under a file lock, so concurrent writers take turns, and is crash-safe at every instant:
    on Linux the two directories are exchanged in one `renameat2(RENAME_EXCHANGE)` call, so
    `target` always names a complete version; where the file system cannot exchange, the
    old version is renamed aside and the new one in, and a crash between the two renames
    is repaired by `recover_swap` (the next writer of `target` renames the old version
    back before anything else).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _leftover_path(target, "staging")
    staging.mkdir()
    try:
        yield staging
        with _swap_lock(target):
            recover_swap(target)
            old = _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _swap_lock(target: Path) -> Iterator[None]:
    with open(target.with_name(f".{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Make `staging` the `target`; returns where the old version now is (to remove)."""
    if not target.exists():
        os.replace(staging, target)
        return None
    if _exchange(staging, target):
        return staging  # the old version now sits at the staging path
    retired = _leftover_path(target, "retired")
    os.replace(target, retired)
    _between_renames()
    os.replace(staging, target)
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
    the swap lock (`output_directory` and `atomic_directory` do)."""
    target = Path(target)
    if target.exists():
        return None
    retired = [p for p in target.parent.glob(f".{target.name}.retired-*") if p.is_dir()]
    if not retired:
        return None
    latest = max(retired, key=lambda p: p.stat().st_ctime_ns)
    os.replace(latest, target)
    return latest


def _leftover_path(target: Path, kind: str) -> Path:
    """`.<name>.<kind>-<host>-<pid>-<random>`: who made it, so cleanup can tell if it's live."""
    return target.with_name(f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
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
                stale = not _pid_alive(pid)
            else:
                stale = time.time() - leftover.stat().st_mtime > FOREIGN_LEFTOVER_AGE_S
            if stale:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def output_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """The one way to write a dataset directory: build it in a local staging directory, then
    make it visible at `target` all at once.

    A local `target` is swapped in with `atomic_directory`. On an object store (a URL) the
    files are uploaded under `v-<manifest hash>/` and `_manifest.json` is written last, so
    readers that go through the manifest see the old version or the new one, never a mix;
    the version before is kept for readers still on it, older ones are removed. Either way a
    failure leaves the previous dataset as it was. The staging directory must end up holding
    a manifest (`write_manifest`).
    """
    location = output_path(target)
    if is_local(location):
        local = Path(os.fspath(location))
        local.parent.mkdir(parents=True, exist_ok=True)
        with _swap_lock(local):
            recover_swap(local)  # before cleaning: a retired version may be the only copy
            clean_stale(local)
        with atomic_directory(local) as staging:
            yield staging
        return
    with tempfile.TemporaryDirectory(prefix="healthgpt-publish-") as tmp:
        yield Path(tmp)
        publish_directory(Path(tmp), location)


def publish_directory(staging: Path, target: Path) -> str:
    """Upload a finished dataset directory to an object store; returns its version prefix.

    Publishing the version already current does nothing (same manifest hash, same bytes).
    Afterwards the target holds what a local swap would leave: the manifest and its
    versions; other entries (the `chunk=*` folders of an earlier chunked layout) go. A
    version is deleted only when it is neither current (read again, as a concurrent writer
    may have published since), nor the one before, nor younger than `KEEP_VERSIONS_S`: a
    reader that resolved its files a moment ago can still read them.
    """
    manifest_file = staging / MANIFEST_NAME
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{staging} has no {MANIFEST_NAME}: nothing complete to publish")
    version = "v-" + file_sha256(manifest_file)[:16]
    previous = _published_root(target)
    if previous == version:
        return version
    atomic_write_text(target / version / PUBLISHED_NAME, f"{time.time():.6f}\n")
    for path in sorted(p for p in staging.rglob("*") if p.is_file() and p != manifest_file):
        upload_file(path, target / version / path.relative_to(staging).as_posix())
    manifest = {**json.loads(manifest_file.read_text()), "root": version}
    atomic_write_text(target / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    keep = {version, previous, _published_root(target)}
    for child in target.iterdir():
        if child.name == MANIFEST_NAME or child.name.startswith(".") or child.name in keep:
            continue
        if not child.name.startswith(("v-", "chunk=")):
            continue  # not written by a publication: never deleted
        if child.name.startswith("v-") and _age_s(child) < KEEP_VERSIONS_S:
            continue
        child.fs.rm(child.path, recursive=True)
    return version


def _published_root(target: Path) -> str | None:
    try:
        return read_manifest(target).get("root")
    except FileNotFoundError:
        return None


def _age_s(version: Path) -> float:
    """Seconds since `version` was published (infinite when its stamp is missing)."""
    try:
        return time.time() - float((version / PUBLISHED_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return float("inf")
