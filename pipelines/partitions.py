"""Chunk partitions for large sources (not wired yet: a decision for the sources group).

`chunk_partitions(plan)` is a `StaticPartitionsDefinition` whose keys are the plan's chunk
ids ("000".."019"). The chunk count is fixed per source (for example `chunks: 20` in
`data_manifests/mimic_cxr.yaml`, sized with `healthgpt.data.chunks.n_chunks_for`), so the
partition keys never change as the source grows, and an item's chunk never changes either.

How a partitioned ingestion would use it:

    @dg.asset(key=ingested_key(name), partitions_def=chunk_partitions(plan), ...)
    def ingested(context, config, locations):
        keep = plan.member(context.partition_key)        # key -> bool, by relative path
        options = replace(config.reader_options(), extra={"keep": keep})
        ingest(name, root, locations.ingested_dir(name) / f"chunk={context.partition_key}",
               options)

- Readers filter on the item's stable key (its relative path) before decoding anything, so
  a chunk costs its own share of decode time; the listing itself is cheap and is done by
  every chunk (stat only, no reads). The reader contract would gain an optional
  `options.extra["keep"]` predicate applied where the reader knows the item's key.
- Each chunk writes its own directory `chunk=NNN/` with its own manifest, atomically; the
  dataset is the union of chunk directories (`datasets.load_dataset("parquet",
  data_files=".../chunk=*/data/train-*.parquet")`). Counts reconcile per chunk.
- A new source fingerprint marks every chunk stale; for per-chunk staleness the
  observation would report one data version per chunk (a fingerprint of that chunk's
  files), which `AutomationCondition.eager()` turns into requests for exactly the changed
  chunks.
- The asset checks need `partitions_def=` (see DESIGN.md).
"""

from __future__ import annotations

import dagster as dg

from healthgpt.data.chunks import ChunkPlan


def chunk_partitions(plan: ChunkPlan) -> dg.StaticPartitionsDefinition:
    """The partitions of a chunked source: one per chunk id."""
    return dg.StaticPartitionsDefinition(plan.chunk_ids())


def chunk_plan_for(source: str, n_chunks: int) -> ChunkPlan:
    return ChunkPlan(source=source, n_chunks=n_chunks)
