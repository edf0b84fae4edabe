"""Sources group: one observable source and one ingestion asset per registered dataset.

The datasets are data: each file of the registry (`data_manifests/*.yaml`, plus the folders
`HEALTHGPT_REGISTRY_DIRS` names; `healthgpt.data.sources.registry`) becomes `source/<name>`
and `ingested/<name>`, read by the reader it names with the options it gives. One asset per
dataset (rather than one asset partitioned by dataset) so that the CLI and the UI can
materialize any selection without partition arguments, each dataset carries its own checks,
and automation rebuilds exactly the dataset whose files changed. A large dataset can also be
split into chunk partitions (`pipelines.partitions`, `HEALTHGPT_CHUNKS_<NAME>`).
"""

import time
import warnings
from collections.abc import Iterable
from dataclasses import fields, replace

import dagster as dg

from healthgpt.data.decode.preview import thumbnail_grid
from healthgpt.data.ingest.run import DEFAULT_MAX_DROP_FRACTION, IngestSummary, ingest
from healthgpt.data.sources import ReaderOptions
from healthgpt.data.sources.fingerprint import fingerprint
from healthgpt.data.sources.registry import DatasetEntry, resolve
from pipelines.metadata import counts_table, png_markdown, records_table, shard_metadata
from pipelines.partitions import chunk_count, chunk_partitions, chunk_plan_for
from pipelines.resources import DataLocations

OWNERS = ["team:data"]


class IngestConfig(dg.Config):
    """Reader options from run config: a field named there overrides the dataset's registry
    options (`options:` of its YAML), and an unnamed one leaves them as they are."""

    image_size: int = 256
    language: str = "en"
    frontal_only: bool = True
    slice_stride: int = 1
    min_foreground_fraction: float = 0.05
    # DICOM: accept the classes known to carry burned-in text (ultrasound, secondary
    # capture, ...) because their pixels were reviewed; see healthgpt.data.decode.deid.
    burned_in_reviewed: bool = False
    target_shard_mb: int = 256
    # Replace the previous output even when the new build has no records, or more than
    # max_drop_fraction fewer (healthgpt.data.ingest.run.check_shrink).
    force: bool = False
    max_drop_fraction: float = DEFAULT_MAX_DROP_FRACTION
    # Limits on hostile input by name, e.g. {"max_volume_voxels": 500000000}
    # (healthgpt.data.limits.Limits; unset ones keep their default or HEALTHGPT_LIMIT_*).
    limits: dict[str, int] = {}

    def reader_options(self, base: ReaderOptions | None = None) -> ReaderOptions:
        """`base` (default `ReaderOptions()`) with the reader fields set in run config;
        `limits` named there are merged over the base's `extra["limits"]`."""
        base = base or ReaderOptions()
        named = self.model_fields_set
        reader_fields = {spec.name for spec in fields(ReaderOptions)}
        overrides = {name: getattr(self, name) for name in named & reader_fields}
        if "limits" in named and self.limits:
            limits = {**base.extra.get("limits", {}), **self.limits}
            overrides["extra"] = {**base.extra, "limits": limits}
        return replace(base, **overrides)


def source_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["source", name])


def ingested_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["ingested", name])


def partitions_for(name: str) -> dg.StaticPartitionsDefinition | None:
    """Chunk partitions when `HEALTHGPT_CHUNKS_<NAME>` is set, else None (one whole asset)."""
    n_chunks = chunk_count(name)
    return chunk_partitions(chunk_plan_for(name, n_chunks)) if n_chunks else None


def running_chunk(name: str, context: dg.OpExecutionContext) -> tuple[int, int] | None:
    """`(index, n_chunks)` of the partition being run, or None for a whole-source run."""
    partitions = partitions_for(name)
    if partitions is None:
        return None
    if not context.has_partition_key:
        raise ValueError(f"{name} is ingested in chunks: pick a partition (a chunk id)")
    keys = partitions.get_partition_keys()
    return keys.index(context.partition_key), len(keys)


def _observe_factory(dataset: DatasetEntry | str) -> dg.SourceAsset:
    entry = resolve(dataset)
    name = entry.name
    partitions = partitions_for(name)

    @dg.observable_source_asset(
        key=source_key(name),
        group_name="sources",
        partitions_def=partitions,
        description=f"The {name} source files on disk (read by the {entry.reader} reader); "
        "data version = fingerprint of its files" + (" (one per chunk)." if partitions else "."),
    )
    def observe(locations: DataLocations) -> dg.DataVersion | dg.DataVersionsByPartition:
        root = locations.source_root(entry)
        if partitions is None:
            return dg.DataVersion(fingerprint(root))
        keys = partitions.get_partition_keys()
        versions = entry.open(root).chunk_versions(len(keys))
        return dg.DataVersionsByPartition(dict(zip(keys, versions, strict=True)))

    return observe


def _log_progress(context: dg.AssetExecutionContext, summary: IngestSummary) -> None:
    rate = summary.items / summary.seconds if summary.seconds else 0.0
    context.log.info(
        f"{summary.source}: {summary.items} items ({rate:.1f}/s), {summary.records} records, "
        f"{summary.quarantined} quarantined"
    )


def _ingest_factory(dataset: DatasetEntry | str) -> dg.AssetsDefinition:
    entry = resolve(dataset)
    name = entry.name
    partitions = partitions_for(name)

    @dg.asset(
        key=ingested_key(name),
        deps=[source_key(name)],
        partitions_def=partitions,
        group_name="sources",
        kinds={"parquet", "python"},
        owners=OWNERS,
        description=f"{name} in the canonical record schema ({entry.reader} reader): "
        "Parquet shards plus quarantine.",
        automation_condition=dg.AutomationCondition.eager(),
    )
    def ingested(
        context: dg.AssetExecutionContext, config: IngestConfig, locations: DataLocations
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        chunk = running_chunk(name, context.op_execution_context)
        out = locations.ingested_dir(name, chunk)
        summary = ingest(
            name,
            locations.source_root(entry),
            out,
            replace(config.reader_options(entry.options), chunk=chunk),
            target_shard_bytes=config.target_shard_mb << 20,
            progress=lambda s: _log_progress(context, s),
            force=config.force,
            max_drop_fraction=config.max_drop_fraction,
            reader_name=entry.reader,
        )
        metadata = {
            "records": dg.MetadataValue.int(summary.records),
            "quarantined": dg.MetadataValue.int(summary.quarantined),
            "input_items": dg.MetadataValue.int(summary.items),
            "by_split": counts_table(summary.by_split, "split"),
            "by_modality": counts_table(summary.by_modality, "modality"),
            "quarantine_reasons": counts_table(summary.quarantine_reasons, "reason"),
            "preview": records_table(summary.preview),
            "path": dg.MetadataValue.path(str(out)),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            **shard_metadata(summary.shards),
        }
        if summary.thumbnails:
            metadata["thumbnails"] = png_markdown(thumbnail_grid(summary.thumbnails), name)
        return dg.MaterializeResult(metadata=metadata)

    return ingested


def source_assets(
    datasets: Iterable[DatasetEntry],
) -> tuple[list[dg.SourceAsset], list[dg.AssetsDefinition]]:
    """The observable sources and the ingestion assets of `datasets`."""
    datasets = list(datasets)
    with warnings.catch_warnings():
        # Observable source assets are marked beta; the warning says nothing a user can act on.
        warnings.simplefilter("ignore", dg.BetaWarning)
        observed = [_observe_factory(entry) for entry in datasets]
    return observed, [_ingest_factory(entry) for entry in datasets]
