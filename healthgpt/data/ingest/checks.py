"""Validation of ingested shards, as plain functions (the Dagster asset checks wrap them).

Each check streams the shards one row group at a time and returns (passed, details).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from healthgpt.data.decode.deid import SAMPLE_MARKER
from healthgpt.data.schema import HASH_COLUMNS, IMAGE_HASH_TYPE, RECORD_SCHEMA
from healthgpt.data.shards import open_shard, read_manifest, shard_paths
from healthgpt.data.sources.registry import DatasetEntry, load_entry

CheckResult = tuple[bool, dict[str, Any]]


def iter_batches(dataset_dir: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    for path in shard_paths(dataset_dir):
        yield from open_shard(path).iter_batches(columns=columns, batch_size=4096)


# Earlier ingestions are still valid: from before the identity columns (record/v1; the
# mixture decodes their images), or with identities bound to their bytes by a sha256 where
# there is now an xxh3 (record/v2; the mixture checks the sha256).
RECORD_SCHEMA_V1 = RECORD_SCHEMA.remove_metadata()
for _column in HASH_COLUMNS.values():
    RECORD_SCHEMA_V1 = RECORD_SCHEMA_V1.remove(RECORD_SCHEMA_V1.get_field_index(_column))
_HASH_TYPE_V2 = pa.struct(
    [(f.name if f.name != "bytes_xxh128" else "bytes_sha256", f.type) for f in IMAGE_HASH_TYPE]
)
RECORD_SCHEMA_V2 = RECORD_SCHEMA.remove_metadata()
for _column in HASH_COLUMNS.values():
    _index = RECORD_SCHEMA_V2.get_field_index(_column)
    RECORD_SCHEMA_V2 = RECORD_SCHEMA_V2.set(_index, pa.field(_column, _HASH_TYPE_V2))


def check_schema(dataset_dir: Path) -> CheckResult:
    found: dict[str, list[str]] = {"wrong": [], "v1": [], "v2": []}
    for path in shard_paths(dataset_dir):
        schema = open_shard(path).schema_arrow.remove_metadata()
        if schema.equals(RECORD_SCHEMA_V1):
            found["v1"].append(path.name)
        elif schema.equals(RECORD_SCHEMA_V2):
            found["v2"].append(path.name)
        elif not schema.equals(RECORD_SCHEMA.remove_metadata()):
            found["wrong"].append(path.name)
    return not found["wrong"], {
        "shards_with_wrong_schema": found["wrong"],
        "shards_without_identities": found["v1"],
        "shards_of_record_v2": found["v2"],
    }


def check_unique_ids(dataset_dir: Path) -> CheckResult:
    seen: set[str] = set()
    duplicates = 0
    for batch in iter_batches(dataset_dir, ["id"]):
        for value in batch.column(0).to_pylist():
            duplicates += value in seen
            seen.add(value)
    return duplicates == 0, {"records": len(seen) + duplicates, "duplicate_ids": duplicates}


def check_images_present(dataset_dir: Path) -> CheckResult:
    empty = 0
    for batch in iter_batches(dataset_dir, ["image"]):
        sizes = pc.binary_length(pc.struct_field(batch.column(0), "bytes")).fill_null(0)
        empty += pc.sum(pc.equal(sizes, 0)).as_py() or 0
    return empty == 0, {"records_without_image": empty}


def expected_counts(dataset: DatasetEntry | Path, source_root: Path) -> tuple[str, dict[str, int]]:
    """The record range the dataset's registry entry expects (`expected_counts`, checked
    when the registry loads), for the sample or the full source. `dataset` is the entry,
    or its registry file (read through `registry.load_entry`, so with the same checks);
    a reader without a registry file expects nothing."""
    profile = "sample" if (Path(source_root) / SAMPLE_MARKER).exists() else "full"
    if not isinstance(dataset, DatasetEntry):
        if not Path(dataset).is_file():
            return profile, {}
        dataset = load_entry(dataset)
    return profile, (dataset.facts.get("expected_counts") or {}).get(profile) or {}


def chunk_range(low: float, high: float, n_chunks: int, per_item: float) -> tuple[int, float]:
    """A source's record range scaled to one of `n_chunks` chunks (see `check_counts`)."""

    def spread(total: float) -> float:
        return 5 * math.sqrt(per_item * total / n_chunks)

    scaled_low = max(0, math.floor(low / n_chunks - spread(low)))
    if high == float("inf"):
        return scaled_low, high
    return scaled_low, math.ceil(high / n_chunks + spread(high))


def check_counts(
    dataset_dir: Path,
    dataset: DatasetEntry | Path,
    source_root: Path,
    chunk: tuple[int, int] | None = None,
) -> CheckResult:
    """Records within the range the dataset's registry entry expects (`expected_counts`).

    For one chunk of n the range is the source's divided by n, widened by five standard
    deviations of the chunk's record count. Chunks take whole items, each with probability
    1/n, and an item brings r records (a QA image about 11, a volume hundreds of slices), so
    the count's variance is about r times its mean; r is this chunk's records per accepted
    item. A correct chunk then falls outside well under once in a thousand checks even when
    items differ in size, while a chunk that lost or duplicated a sizeable share of its
    items, or a wrong plan, fails.
    """
    summary = read_manifest(dataset_dir)["summary"]
    records = summary["records"]
    profile, expected = expected_counts(dataset, source_root)
    low = expected.get("records_min", 0)
    high = expected.get("records_max", float("inf"))
    details = {"records": records, "profile": profile}
    if chunk is not None:
        per_item = max(1.0, records / max(1, summary["items"] - summary["quarantined"]))
        low, high = chunk_range(low, high, chunk[1], per_item)
        details["chunk"] = f"{chunk[0]} of {chunk[1]} (range scaled to one chunk)"
        details["records_per_item"] = round(per_item, 2)
    details["expected_min"] = low
    if high != float("inf"):
        details["expected_max"] = high
    return low <= records <= high, details
