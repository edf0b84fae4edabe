"""The small typed values the mixture build passes between its passes, its worker processes
and its card: named fields instead of positional tuples, so each hand-over reads as what it is.

Worker payloads (`HashJob`, `HashResult`) live in `pixels`, which a worker imports without
polars or pyarrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from healthgpt.data.mixture.pixels import ImageHash
from healthgpt.data.mixture.tasks import PlannedSample
from healthgpt.data.shards import ShardInfo
from healthgpt.data.tasks import SUBSETS as SUBSETS  # the output folders, in listing order

# --- input ---------------------------------------------------------------------------------


class IngestedPart(NamedTuple):
    """One completed ingestion directory (a whole source or one chunk) and its manifest."""

    path: Path
    manifest: dict[str, Any]


class IngestedSource(NamedTuple):
    """One dataset of the mixture's input, its manifests read once: the build, its shard
    list and the card's license lookup all use this value."""

    name: str  # the dataset name, the samples' `source`
    parts: list[IngestedPart]
    shards: list[Path]  # in manifest order, parts in order

    @property
    def reader_source(self) -> str | None:
        """The reader that ingested it (differs from `name` for a renamed `llava_json`)."""
        return self.parts[0].manifest.get("summary", {}).get("source") if self.parts else None


# --- pass 2: index -------------------------------------------------------------------------


class HashKey(NamedTuple):
    """A hash-cache key: the PNG's digest, and whether the hash is of its degraded
    (super-resolution input) version rather than of the image itself."""

    digest: bytes
    degraded: bool = False


class ColumnHashes(NamedTuple):
    """One image column of a record: its digest, the degradation factor its samples need
    (0: none), and the hashes the cache already held (None: a worker computes them)."""

    digest: bytes
    need: int
    original: ImageHash | None
    degraded: ImageHash | None

    @property
    def pending(self) -> bool:
        return self.original is None or (self.need > 0 and self.degraded is None)

    @property
    def job_key(self) -> tuple[bytes, int]:
        return (self.digest, self.need)


class PlannedRecord(NamedTuple):
    """A record's planned samples and the hashes of the image columns they use."""

    source: str
    samples: list[PlannedSample]
    hashes: dict[str, ColumnHashes]


class IndexBatch(NamedTuple):
    """One input batch, planned: what the main process keeps while workers hash `jobs`."""

    records: list[PlannedRecord]
    jobs: list[tuple[bytes, int]]  # `ColumnHashes.job_key` of each image to hash
    n_records: int


# --- pass 3: write -------------------------------------------------------------------------


class RenderJob(NamedTuple):
    """A selected sample to render, with its number of copies per subset."""

    record: dict[str, Any]
    sample: PlannedSample
    copies: dict[str, int]


class RenderBatch(NamedTuple):
    source: str
    jobs: list[RenderJob]
    n_records: int


class SampleName(NamedTuple):
    """The ids the removed table prints for a sample named by its input position."""

    sample_id: str
    record_id: str


# --- output --------------------------------------------------------------------------------


@dataclass
class MixtureSummary:
    """What a build produced: counts per subset, removals, the plan, shards and paths."""

    out: str
    records: int = 0
    candidates: int = 0
    images_decoded: int = 0  # images without a stored identity, and super-resolution inputs
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    not_selected: int = 0
    plan: list[dict[str, Any]] = field(default_factory=list)
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    images: list[ShardInfo] = field(default_factory=list)  # the images table the shards use
    paths: dict[str, str] = field(default_factory=dict)
    licenses: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self, subset: str) -> int:
        return sum(self.counts.get(subset, {}).get("task", {}).values())

    def to_json(self) -> dict[str, Any]:
        """The summary without timings (it goes into the manifest: identical inputs, same bytes)."""
        return {
            "records": self.records,
            "candidates": self.candidates,
            "rows": {s: self.rows(s) for s in SUBSETS},
            "counts": self.counts,
            "removed": dict(sorted(self.removed.items())),
            "not_selected": self.not_selected,
            "licenses": self.licenses,
        }
