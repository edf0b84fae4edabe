"""Chunk partitions for large sources: one Dagster partition per stable chunk.

A source is chunked when `HEALTHGPT_CHUNKS_<NAME>` names a chunk count (for example
`HEALTHGPT_CHUNKS_MIMIC_CXR=8`, sized with `healthgpt.data.sources.chunks.n_chunks_for` and then
fixed: changing it moves items between chunks and rebuilds them all). Unset, the source is
one unpartitioned asset, so `dagster asset materialize --select '*'` needs no partition
arguments; that is the default for every source.

For a chunked source:
- `source/<name>` reports one data version per chunk (`SourceReader.chunk_versions`), so a
  changed image moves one chunk's version and `AutomationCondition.eager()` rebuilds that
  chunk only; a listing moves every chunk unless its reader splits it by row (MIMIC-CXR's
  tables: new studies move only their chunks).
- `ingested/<name>` partition `NNN` reads only that chunk's items (readers skip the others
  before decoding) and writes `ingested/<name>/chunk=NNN/` atomically; many workers (one pod
  each under the Kubernetes executor) ingest one source in parallel.
- The mixture reads every chunk directory and refuses to start while any chunk is missing.
"""

from __future__ import annotations

import dagster as dg

from healthgpt.data.sources.chunks import ChunkPlan
from healthgpt.settings import settings

CHUNKS_ENV = "HEALTHGPT_CHUNKS_{}"


def chunk_count(source: str) -> int | None:
    """The configured chunk count of `source`, or None when it is ingested whole."""
    variable = CHUNKS_ENV.format(source.upper())
    value = settings().value(variable)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{variable} must be a positive chunk count, got {value!r}")
    return int(value)


def chunk_partitions(plan: ChunkPlan) -> dg.StaticPartitionsDefinition:
    """The partitions of a chunked source: one per chunk id ("000", "001", ...)."""
    return dg.StaticPartitionsDefinition(plan.chunk_ids())


def chunk_plan_for(source: str, n_chunks: int) -> ChunkPlan:
    return ChunkPlan(source=source, n_chunks=n_chunks)
