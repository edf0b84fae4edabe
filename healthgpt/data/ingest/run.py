"""Run one source reader into shards: the function behind `healthgpt ingest` and the asset.

With `options.chunk = (index, n_chunks)` only the items of that stable chunk are read (see
`healthgpt.data.sources.chunks`); the caller writes each chunk to its own `out` (`chunk=NNN/`).

Output layout under `out`:

    data/{train,validation,test}-NNNNN.parquet   canonical records, one file set per split
    quarantine.parquet                          every rejected input item, with its reason
    _manifest.json                              shards, hashes and the summary (written last)

`datasets.load_dataset("parquet", data_dir=out / "data")` loads it with named splits.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from healthgpt.data.decode.identity import identity_value, remember_identities
from healthgpt.data.schema import HASH_COLUMNS, QUARANTINE_SCHEMA, RECORD_SCHEMA
from healthgpt.data.shards import (
    MANIFEST_NAME,
    PUBLISHED_NAME,
    ShardInfo,
    ShardWriter,
    output_directory,
    read_manifest,
    write_manifest,
    write_table_file,
)
from healthgpt.data.sources import ReaderOptions
from healthgpt.data.sources.chunks import ChunkPlan
from healthgpt.data.sources.registry import open_reader
from healthgpt.storage import is_local, output_path

PREVIEW_COLUMNS = ("id", "split", "kind", "modality", "body_part", "task", "question", "answer")


@dataclass
class IngestSummary:
    """What an ingestion produced; every input item is either accepted or quarantined."""

    source: str
    items: int = 0
    accepted_items: int = 0
    quarantined: int = 0
    records: int = 0
    by_split: Counter = field(default_factory=Counter)
    by_modality: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    quarantine_reasons: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    chunk: tuple[int, int] | None = None
    other_chunks: int = 0  # items of other chunks, not read (not in the manifest)
    shards: list[ShardInfo] = field(default_factory=list)
    seconds: float = 0.0
    preview: list[dict[str, Any]] = field(default_factory=list)
    thumbnails: list[bytes] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return self.items == self.accepted_items + self.quarantined

    def to_json(self) -> dict[str, Any]:
        """The one-line summary the CLI prints (no images)."""
        return {
            "source": self.source,
            "items": self.items,
            "records": self.records,
            "quarantined": self.quarantined,
            "shards": len(self.shards),
            "splits": dict(sorted(self.by_split.items())),
            "modalities": dict(sorted(self.by_modality.items())),
            "kinds": dict(sorted(self.by_kind.items())),
            "quarantine_reasons": dict(self.quarantine_reasons.most_common(10)),
            # Readers skip by configuration while listing, before the chunk test: in a chunk's
            # summary the count is the whole listing's, so the key says so.
            ("skipped_by_config_whole_listing" if self.chunk else "skipped_by_config"): dict(
                sorted(self.skipped.items())
            ),
            "reconciled": self.reconciled,
            **(
                {"chunk": list(self.chunk), "other_chunks": self.other_chunks} if self.chunk else {}
            ),
            "seconds": round(self.seconds, 3),
        }


ProgressFn = Callable[[IngestSummary], None]

# A new build with fewer records than this fraction below the previous output's does not
# replace it unless forced (`--force`, the asset's `force` config).
DEFAULT_MAX_DROP_FRACTION = 0.5
# What an ingested output directory holds beside the shards its manifest lists.
OWN_FILES = frozenset({MANIFEST_NAME, "quarantine.parquet"})
_CHUNK_DIR = re.compile(r"^chunk=\d+$")
_VERSION_PREFIX = re.compile(r"^v-[0-9a-f]{16}$")


class OutputRefused(ValueError):
    """The output location is unsafe to replace, or the new build would replace a good
    output with far fewer records; nothing was changed."""


def check_output_target(out: str | Path, root: str | Path, source: str) -> None:
    """Refuse an output location that is the source root, inside it or contains it, that is
    a symbolic link, or that holds anything but a previous output of `source` written by
    this tool (the swap replaces the directory whole)."""
    location = output_path(out)
    if is_local(location):
        given = Path(os.fspath(location))
        if given.is_symlink():
            raise OutputRefused(
                f"output {given} is a symbolic link (to {os.readlink(given)}); replacing it "
                "would put a real directory in its place: give the directory it points to"
            )
        target, source_root = given.resolve(), Path(root).resolve()
        if target == source_root or target in source_root.parents:
            raise OutputRefused(
                f"output {target} is the source root or contains it ({source_root}); "
                "choose an output directory outside the source"
            )
        if source_root in target.parents:
            raise OutputRefused(
                f"output {target} is inside the source root ({source_root}); a later run "
                "would read its own output: choose an output directory outside the source"
            )
    problem = foreign_content(location, source)
    if problem:
        raise OutputRefused(
            f"output {location} {problem}: it is not a previous output of healthgpt ingest "
            f"{source}, and replacing it would delete it; choose an empty or new directory"
        )


def foreign_content(location: Path, source: str, nested: bool = False) -> str | None:
    """Why `location` is not (empty, missing or) a previous ingest output of `source`, or
    None. An output is recognised by its manifest, not by file names: a `_manifest.json` of
    this tool (JSON with `shards` and `summary`) naming `source`, and nothing beside it that
    the manifest does not list (its shards, the quarantine table, a version prefix it names
    as its root or an earlier one stamped by a publication, or chunk folders that are
    outputs of `source` themselves)."""
    if not location.exists():
        return None
    if not location.is_dir():
        return "is a file"
    children = {child.name: child for child in location.iterdir()}
    if not children:
        return None
    manifest = _own_manifest(location, source) if MANIFEST_NAME in children else None
    if isinstance(manifest, str):
        return manifest
    listed = {str(s.get("path")) for s in (manifest or {}).get("shards", []) if isinstance(s, dict)}
    current = (manifest or {}).get("root")
    for name, child in sorted(children.items()):
        if manifest is not None and name in OWN_FILES:
            continue
        if not nested and _CHUNK_DIR.match(name):
            problem = foreign_content(child, source, nested=True)
            if problem:
                return f"has {name}/ that {problem}"
            continue
        if manifest is not None and _VERSION_PREFIX.match(name):
            problem = _version_problem(child, listed if name == current else None)
            if problem:
                return f"has {name}/ that {problem}"
            continue
        if manifest is not None and child.is_dir():
            unlisted = _unlisted(child, f"{name}/", listed)
            if unlisted is None:
                continue
            return f"holds {unlisted!r}, which its {MANIFEST_NAME} does not list"
        return f"holds {name!r}" + ("" if manifest else f" and no {MANIFEST_NAME} of this tool")
    return None


def _own_manifest(location: Path, source: str) -> dict[str, Any] | str:
    """The manifest at `location` if this tool wrote it for `source`, else why not."""
    try:
        manifest = read_manifest(location)
    except (ValueError, OSError):
        return f"holds a {MANIFEST_NAME} that is not valid JSON"
    summary = manifest.get("summary") if isinstance(manifest, dict) else None
    if not isinstance(summary, dict) or not isinstance(manifest.get("shards"), list):
        return f"holds a {MANIFEST_NAME} that healthgpt ingest did not write"
    if summary.get("source") != source:
        return f"holds the output of source {summary.get('source')!r}"
    return manifest


def _unlisted(folder: Path, prefix: str, listed: set[str] | frozenset[str]) -> str | None:
    """The first file under `folder` (named `prefix` + its relative path) not in `listed`."""
    for path in sorted(folder.rglob("*")):
        name = prefix + path.relative_to(folder).as_posix()
        if not path.is_dir() and name not in listed:
            return name
    return None


def _version_problem(version: Path, listed: set[str] | None) -> str | None:
    """A version prefix of an object-store publication: the current one must hold only what
    the manifest lists; an earlier one (kept for readers still on it) must carry the
    publication stamp and hold only shards and the quarantine table."""
    if listed is not None:
        extra = _unlisted(version, "", listed | OWN_FILES | {PUBLISHED_NAME})
        return f"holds {extra!r}, which the manifest does not list" if extra else None
    if not (version / PUBLISHED_NAME).is_file():
        return "was not written by a publication (no stamp)"
    for path in version.rglob("*"):
        rel = path.relative_to(version).as_posix()
        if path.is_dir() or rel in OWN_FILES | {PUBLISHED_NAME}:
            continue
        if not (rel.startswith("data/") and rel.endswith(".parquet")):
            return f"holds {rel!r}"
    return None


def check_shrink(
    source: str, out: str | Path, summary: IngestSummary, max_drop_fraction: float
) -> None:
    """Refuse to replace a good previous output with none, or with a fraction more than
    `max_drop_fraction` fewer records (an emptied listing, a renamed column)."""
    try:
        before = int(read_manifest(out).get("summary", {}).get("records") or 0)
    except (FileNotFoundError, ValueError, OSError):
        return
    after = summary.records
    if before == 0 or (after and (before - after) / before <= max_drop_fraction):
        return
    reasons = ", ".join(f"{r} ({n})" for r, n in summary.quarantine_reasons.most_common(3))
    raise OutputRefused(
        f"{source}: the new build has {after} records where the output at {out} has "
        f"{before} (more than max_drop_fraction={max_drop_fraction} fewer); the previous "
        f"output is kept. Items read: {summary.items}, quarantined: {summary.quarantined}"
        + (f" ({reasons})" if reasons else "")
        + ". Check the source, or replace the output anyway with --force "
        "(asset config force: true)"
    )


def _reason_class(reason: str) -> str:
    """Group reasons for the summary: the text before the first colon."""
    return reason.split(":", 1)[0][:80]


def ingest(
    source: str,
    root: str | Path,
    out: str | Path,
    options: ReaderOptions | None = None,
    *,
    target_shard_bytes: int = 256 << 20,
    n_thumbnails: int = 16,
    progress: ProgressFn | None = None,
    progress_every_s: float = 5.0,
    force: bool = False,
    max_drop_fraction: float = DEFAULT_MAX_DROP_FRACTION,
    reader_name: str | None = None,
) -> IngestSummary:
    """Read dataset `source` from `root` with reader `reader_name` (default: the reader of
    the same name) and write its shards, quarantine and manifest to `out`. Records, ids and the
    manifest carry the dataset's name, so two datasets of one reader stay apart.

    The output directory is replaced atomically: a crash leaves the previous output in place,
    and a rerun with the same inputs writes byte-identical shards. `out` must not be the
    source root (or hold it) nor hold anything but a previous output
    (`check_output_target`), and a build with no records, or more than
    `max_drop_fraction` fewer than the previous output, does not replace it unless `force`.
    """
    check_output_target(out, root, source)
    reader = open_reader(reader_name or source, root, options, dataset=source)
    reader.validate_layout()
    summary = IngestSummary(source=source, chunk=reader.options.chunk)
    started = last_report = time.perf_counter()
    quarantine_rows: list[dict[str, Any]] = []
    # Readers encode each image once; its identity is kept then, for `_write_record`.
    with output_directory(out) as staging, remember_identities():
        writers: dict[str, ShardWriter] = {}
        for outcome in reader.items():
            if not reader.owns(outcome):
                summary.other_chunks += 1
                continue
            summary.items += 1
            if outcome.quarantined is not None:
                summary.quarantined += 1
                quarantine_rows.append(outcome.quarantined.row(source))
                summary.quarantine_reasons[_reason_class(outcome.quarantined.reason)] += 1
            else:
                summary.accepted_items += 1
                for record in outcome.records:
                    _write_record(writers, staging, record, target_shard_bytes)
                    _count(summary, record, n_thumbnails)
            now = time.perf_counter()
            if progress and now - last_report >= progress_every_s:
                summary.seconds = now - started
                progress(summary)
                last_report = now
        summary.skipped.update(reader.skipped)
        for split in sorted(writers):
            summary.shards.extend(shard.under("data") for shard in writers[split].close())
        quarantine = pa.Table.from_pylist(quarantine_rows, schema=QUARANTINE_SCHEMA)
        write_table_file(staging / "quarantine.parquet", quarantine)
        summary.seconds = time.perf_counter() - started
        if not summary.reconciled:
            raise AssertionError(f"{source}: counts do not reconcile: {summary.to_json()}")
        if not force:
            check_shrink(source, out, summary, max_drop_fraction)
        write_manifest(staging, summary.shards, summary=_stable_summary(summary))
    if progress:
        progress(summary)
    return summary


def _stable_summary(summary: IngestSummary) -> dict[str, Any]:
    """The manifest's summary without timings, so identical inputs give identical manifests."""
    payload = summary.to_json()
    payload.pop("seconds")
    payload.pop("other_chunks", None)
    return payload


def _write_record(
    writers: dict[str, ShardWriter], staging: Path, record: dict[str, Any], target: int
) -> None:
    split = record["split"]
    if split not in writers:
        writers[split] = ShardWriter(
            staging / "data", RECORD_SCHEMA, prefix=split, target_shard_bytes=target
        )
    writers[split].write(add_identities(record))


def add_identities(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with the identity of each image it holds (`schema.HASH_COLUMNS`): as noted
    when a reader encoded it inside `remember_identities`, else by decoding it."""
    for column, hash_column in HASH_COLUMNS.items():
        image = record[column]
        if image and image.get("bytes") and record.get(hash_column) is None:
            record[hash_column] = identity_value(image["bytes"])
    return record


def _count(summary: IngestSummary, record: dict[str, Any], n_thumbnails: int) -> None:
    summary.records += 1
    summary.by_split[record["split"]] += 1
    summary.by_modality[record["modality"]] += 1
    summary.by_kind[record["kind"]] += 1
    if len(summary.preview) < 10:
        summary.preview.append({k: record.get(k) for k in PREVIEW_COLUMNS})
    image = record.get("image")
    if image and len(summary.thumbnails) < n_thumbnails and summary.records % 3 == 1:
        summary.thumbnails.append(image["bytes"])


def chunk_dir(out: str | Path, chunk: tuple[int, int]) -> Path:
    """Where chunk `(index, n_chunks)` of an ingested source goes: `<out>/chunk=NNN`."""
    index, n_chunks = chunk
    location = output_path(out)
    return location / f"chunk={ChunkPlan(location.name, n_chunks).label(index)}"


class IncompleteSource(RuntimeError):
    """An ingested source is only partly there: some of its chunks are missing, or one chunk's
    output stands where the whole source should be."""


def ingested_parts(out: str | Path, *, complete: bool = True) -> list[Path]:
    """The directories holding one ingested source: its chunk directories if it was ingested
    in chunks (they take precedence over an older whole-source output), else `out` itself.

    Raises `FileNotFoundError` when nothing was ingested, and `IncompleteSource` when only
    part of the source was. With `complete=False` the chunks present are returned (progress
    displays); consumers of the data keep the default, so none reads part of a source.
    """
    if complete:
        return [path for path, _ in read_ingested(out)]
    out = output_path(out)
    chunks = _chunk_dirs(out)
    if chunks:
        return chunks
    _whole_manifest(out)
    return [out]


def read_ingested(out: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """`ingested_parts` of a complete source with the manifest of each part, each read once
    (a consumer passes the manifest on rather than reading it again)."""
    out = output_path(out)
    chunks = _chunk_dirs(out)
    if not chunks:
        return [(out, _whole_manifest(out))]
    parts = [(chunk, read_manifest(chunk)) for chunk in chunks]
    plans = {tuple(manifest["summary"]["chunk"]) for _, manifest in parts}
    counts = {n for _, n in plans}
    if len(counts) != 1:
        raise IncompleteSource(f"{out}: chunks of different plans ({sorted(counts)} chunks)")
    (n_chunks,) = counts
    missing = sorted(set(range(n_chunks)) - {index for index, _ in plans})
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise IncompleteSource(
            f"{out}: {len(missing)} of {n_chunks} chunks not ingested yet: {shown}"
        )
    return parts


def _chunk_dirs(out: Path) -> list[Path]:
    return sorted((p for p in out.glob("chunk=*") if p.is_dir()), key=lambda p: p.name)


def _whole_manifest(out: Path) -> dict[str, Any]:
    """The manifest of a source ingested whole; one chunk's output there is refused."""
    manifest = read_manifest(out)
    chunk = manifest.get("summary", {}).get("chunk")
    if chunk:
        raise IncompleteSource(
            f"{out} holds chunk {chunk[0]} of {chunk[1]} only; chunks belong in "
            f"{chunk_dir(out, tuple(chunk)).name}/ folders (ingest with the chunk's directory)"
        )
    return manifest
