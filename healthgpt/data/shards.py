"""The one way to write Parquet shards: streaming, size-bounded, atomic, deterministic.

- Rows are buffered up to `row_group_bytes` and flushed as a row group, so memory is bounded
  by the buffer, not by the data.
- A shard file is written under a temporary name and renamed when complete (through
  `healthgpt.storage`, which owns every atomic write and the directory swap).
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
import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from healthgpt.data.schema import IMAGE_TYPE, hf_features_metadata
from healthgpt.storage import (
    atomic_directory,
    atomic_path,
    atomic_write_text,
    clean_stale,
    file_sha256,
    is_local,
    move_into_place,
    output_path,
    recover_swap,
    swap_lock,
    upload_file,
    write_json,
)

MANIFEST_NAME = "_manifest.json"
PUBLISHED_NAME = "_published"  # in an object-store version prefix: when it was published
# Versions of a dataset on an object store are kept this long after they stop being current.
KEEP_VERSIONS_S = 24 * 3600


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
    """Cheap size estimate of a row: the byte length of its binary and string values.
    (Called once per row written: exact type tests, no isinstance chain.)"""
    total = 64
    for value in row.values():
        kind = type(value)
        if kind is bytes or kind is str:
            total += len(value)
        elif kind is dict:
            total += _row_bytes(value)
        elif kind is list:
            total += sum(_row_bytes(v) if type(v) is dict else 16 for v in value)
        elif isinstance(value, (bytes, str)):  # subclasses
            total += len(value)
    return total


def rows_table(
    rows: list[dict[str, Any]], schema: pa.Schema, scratch: bytearray | None = None
) -> pa.Table:
    """`pa.Table.from_pylist(rows, schema=schema)`, with each image column's bytes copied
    once into a buffer of the exact size: `from_pylist` grows its buffer by doubling, which
    touched about twice a row group's image bytes in fresh memory, a tenth of ingestion's
    own CPU time. `scratch`: memory to copy them into instead, reused by a writer from one
    row group to the next (the table must be dropped before `scratch` is used again)."""
    columns: list[Any] = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        image = _image_array(values, scratch) if field.type == IMAGE_TYPE else None
        columns.append(values if image is None else image)
        if image is not None:
            scratch = None  # one table, one image column in it
    return pa.Table.from_arrays(columns, schema=schema)


_IMAGE_KEYS = frozenset(("bytes", "path"))
_MAX_BINARY_BYTES = (1 << 31) - 1  # 32-bit offsets of `pa.binary()`


def _image_array(values: list[Any], scratch: bytearray | None = None) -> pa.StructArray | None:
    """An IMAGE_TYPE column of `values` (None or {"bytes": bytes | None, "path": str |
    None}) whose bytes child is one joined buffer, or None when a value is of another shape
    (`pa.array` then converts it, or names what is wrong)."""
    for value in values:
        if value is None:
            continue
        if type(value) is not dict or not value.keys() <= _IMAGE_KEYS:
            return None
        data, path = value.get("bytes"), value.get("path")
        if not (data is None or type(data) is bytes) or not (path is None or type(path) is str):
            return None
    blobs = [(value or {}).get("bytes") for value in values]
    sizes = np.fromiter((len(b) if b is not None else 0 for b in blobs), np.int64, len(blobs))
    if int(sizes.sum()) > _MAX_BINARY_BYTES:
        return None
    offsets = np.zeros(len(blobs) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    data = pa.py_buffer(_joined(blobs, int(offsets[-1]), scratch))
    has_bytes = np.fromiter((b is not None for b in blobs), bool, len(blobs))
    data_array = pa.BinaryArray.from_buffers(
        pa.binary(),
        len(blobs),
        [_validity(has_bytes), pa.py_buffer(offsets), data],
        null_count=int(len(blobs) - has_bytes.sum()),
    )
    paths = pa.array([(value or {}).get("path") for value in values], pa.string())
    present = np.fromiter((value is not None for value in values), bool, len(values))
    mask = None if present.all() else pa.array(~present)
    return pa.StructArray.from_arrays([data_array, paths], fields=list(IMAGE_TYPE), mask=mask)


def _joined(blobs: list[bytes | None], size: int, scratch: bytearray | None) -> Any:
    """The blobs one after another: in `scratch` where it is large enough (a fresh 8 MB
    `bytes` for each row group page-faulted in every time: 0.5% of ingestion's CPU), else in
    a new buffer."""
    if scratch is None or len(scratch) < size:
        return b"".join(b for b in blobs if b is not None)
    view, position = memoryview(scratch), 0
    for blob in blobs:
        if blob:
            view[position : position + len(blob)] = blob
            position += len(blob)
    return view[:size]


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    """An Arrow validity bitmap (least significant bit first), or None when all are valid."""
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


ROW_GROUP_BYTES = 8 << 20
"""Bytes of rows buffered per row group, where a writer names no other size (ingestion, the
VQ codes; the mixture's are set by its config). 8 MB rather than 32: a writer reuses the
same memory for every row group, and a fresh process paid page faults on four times as much
of it (ingestion measured 1.9% more of its CPU in the codec at 8 MB than at 32 MB; 4 MB was
worse again, from per-group overhead)."""


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
        row_group_bytes: int = ROW_GROUP_BYTES,
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
        self._scratch = bytearray()
        self._image_column = next((f.name for f in schema if f.type == IMAGE_TYPE), None)
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
        needed = self._first_image_bytes()
        if len(self._scratch) < needed <= 2 * self.row_group_bytes:
            self._scratch = bytearray(needed + (needed >> 2))
        table = rows_table(self._buffer, self.schema, self._scratch)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._rows_in_shard += len(self._buffer)
        self._bytes_in_shard += self._buffer_bytes
        self._buffer, self._buffer_bytes = [], 0
        if self._bytes_in_shard >= self.target_shard_bytes:
            self._finish_shard()

    def _first_image_bytes(self) -> int:
        """Bytes of the buffered rows' images in the schema's first image column, the one
        `rows_table` copies into the scratch buffer (0 for a schema without images, or
        images stored by reference: no buffer is kept for them)."""
        column = self._image_column
        if column is None:
            return 0
        values = (row.get(column) for row in self._buffer)
        return sum(
            len(v["bytes"]) for v in values if type(v) is dict and type(v.get("bytes")) is bytes
        )

    def _finish_shard(self) -> None:
        self._writer.close()
        final = self.directory / f"{self.prefix}-{len(self.shards):05d}.parquet"
        move_into_place(self._tmp_path, final)
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


# --- images stored once ---------------------------------------------------------------------

IMAGES_FOLDER = "images"
IMAGE_REF_PREFIX = "sha256:"
IMAGES_SCHEMA = pa.schema(
    [pa.field("sha256", pa.string(), nullable=False), pa.field("image", IMAGE_TYPE)],
    metadata={"healthgpt.schema": "images/v1"},
)
"""`<dataset>/images/data/images-NNNNN.parquet`: each distinct image once, keyed by the hex
sha256 of its PNG bytes. A dataset's sample shards then hold, in an image column,
`{"bytes": None, "path": "sha256:<hex>"}` instead of the bytes: an image used by several
samples, tasks or subsets is stored once. `resolve_images` puts the bytes back."""
IMAGES_ROW_GROUP_BYTES = 4 << 20  # small: a reader fetching one image reads one row group


class ImageTableWriter:
    """Writes each distinct image once into a dataset's images table and hands out the
    reference that replaces it in a sample row. Remembers the 16-byte digest prefix of every
    image written (about 100 bytes each, like the build's sample index)."""

    def __init__(self, root: Path, target_shard_bytes: int = 256 << 20) -> None:
        self.writer = ShardWriter(
            Path(root) / IMAGES_FOLDER / "data",
            IMAGES_SCHEMA,
            prefix="images",
            target_shard_bytes=target_shard_bytes,
            row_group_bytes=IMAGES_ROW_GROUP_BYTES,
            # No `datasets` Image feature: `image` loads as {bytes, path} and the build does
            # not pay the `datasets` import (seconds of CPU per run) for it.
            hf_images=False,
        )
        self._seen: set[bytes] = set()

    def ref(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """The reference for an IMAGE_TYPE value (None and empty images stay as they are)."""
        if not value or not value.get("bytes"):
            return value
        name = hashlib.sha256(value["bytes"]).hexdigest()
        self.put(name, value["bytes"])
        return {"bytes": None, "path": IMAGE_REF_PREFIX + name}

    def put(self, name: str, data: bytes) -> None:
        """Store `data` under hex sha256 `name` unless that name is stored already (a caller
        may key an image by another image's sha256: the build keeps each super-resolution
        input under its original's)."""
        key = bytes.fromhex(name[:32])
        if key not in self._seen:
            self._seen.add(key)
            self.writer.write({"sha256": name, "image": {"bytes": data, "path": None}})

    def close(self) -> list[ShardInfo]:
        return [info.under(f"{IMAGES_FOLDER}/data") for info in self.writer.close()]

    def abort(self) -> None:
        self.writer.abort()


class ImageStore:
    """Image bytes by sha256 from one dataset's images table: a sorted array of the digests
    (32 bytes per image) locates an image's row group, and the last few row groups read are
    kept, since samples read in order use images stored in about that order."""

    def __init__(self, root: str | os.PathLike[str], cached_groups: int = 4) -> None:
        self.root = output_path(root)
        self.files = listed_shards(self.root / IMAGES_FOLDER, "data/")
        keys, places = [], []
        for number, path in enumerate(self.files):
            parquet = open_shard(path)
            for group in range(parquet.metadata.num_row_groups):
                names = parquet.read_row_group(group, columns=["sha256"])["sha256"].to_pylist()
                keys.extend(bytes.fromhex(n) for n in names)
                places.extend((number, group, row) for row in range(len(names)))
        digests = np.array(keys, dtype="S32")
        order = np.argsort(digests, kind="stable")
        self._digests = digests[order]
        self._places = np.array(places, dtype=np.int64).reshape(-1, 3)[order]
        self._groups: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self.cached_groups = cached_groups

    def _group(self, number: int, group: int) -> pa.Table:
        key = (number, group)
        if key not in self._groups:
            self._groups[key] = open_shard(self.files[number]).read_row_group(group)
            while len(self._groups) > self.cached_groups:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key]

    def get(self, name: str) -> bytes | None:
        """The bytes of the image whose sha256 is hex `name`, or None when it is not stored."""
        digest = np.array([bytes.fromhex(name)], dtype="S32")
        at = int(np.searchsorted(self._digests, digest)[0])
        if at >= len(self._digests) or self._digests[at] != digest[0]:
            return None
        number, group, row = (int(v) for v in self._places[at])
        table = self._group(number, group)
        if table["sha256"][row].as_py() != name:
            return None  # the files changed since they were indexed
        return table["image"][row]["bytes"].as_py()


_STORES: OrderedDict[str, ImageStore] = OrderedDict()


def _image_bytes(root: Path, name: str) -> bytes:
    """One image of the dataset at `root`; re-indexes once (the dataset may have been
    rebuilt since its index was read) before calling a reference dangling."""
    key = str(root)
    for attempt in range(2):
        if attempt or key not in _STORES:
            _STORES[key] = ImageStore(root)
            while len(_STORES) > 4:
                _STORES.popitem(last=False)
        data = _STORES[key].get(name)
        if data is not None:
            return data
    raise KeyError(f"image {IMAGE_REF_PREFIX}{name} is not in {root}/{IMAGES_FOLDER}")


def resolve_images(data: pa.Table | pa.RecordBatch, shard: str | os.PathLike[str]) -> pa.Table:
    """The one way to read samples with their images: `data` (read from `shard`) with every
    image reference (`IMAGE_REF_PREFIX`) replaced by the image's bytes, from the images table
    of the dataset the shard belongs to (`<dataset>/<subset>/data/<shard>`). Shards holding
    their bytes inline pass through unchanged, so readers need not know which kind they got.
    """
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    for index, field in enumerate(table.schema):
        if field.type != IMAGE_TYPE:
            continue
        column = table.column(index)
        paths = pc.struct_field(column, "path")
        if not pc.any(pc.fill_null(pc.starts_with(paths, IMAGE_REF_PREFIX), False)).as_py():
            continue
        root = output_path(shard).parent.parent.parent
        values = []
        for value in column.to_pylist():
            path = (value or {}).get("path") or ""
            if path.startswith(IMAGE_REF_PREFIX):
                value = {"bytes": _image_bytes(root, path[len(IMAGE_REF_PREFIX) :]), "path": None}
            values.append(value)
        table = table.set_column(index, field, pa.array(values, type=IMAGE_TYPE))
    return table


def write_table_file(path: Path, table: pa.Table) -> ShardInfo:
    """Write one small table (quarantine, predictions) atomically as a single Parquet file."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return ShardInfo(path.name, table.num_rows, path.stat().st_size, file_sha256(path))


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


def shard_paths(
    directory: str | os.PathLike[str], prefix: str = "", manifest: dict[str, Any] | None = None
) -> list[Path]:
    """The completed shards a dataset's manifest lists (those whose path starts with
    `prefix`, e.g. "stage1/data/train-"), in manifest order. Reading the manifest rather than
    listing files is what makes an object-store copy safe to read while it is replaced.
    Pass `manifest` when it was already read."""
    manifest = read_manifest(directory) if manifest is None else manifest
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
        with swap_lock(local):
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
    write_json(target / MANIFEST_NAME, {**json.loads(manifest_file.read_text()), "root": version})
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
