"""Sources group: one observable source per public source, one ingestion asset per source.

One asset per source (rather than one asset partitioned by source) so that the CLI and the
UI can materialize any selection without partition arguments, each source carries its own
checks, and automation rebuilds exactly the source whose files changed.
"""

import time
import warnings
from pathlib import Path

import dagster as dg

from healthgpt.data.fingerprint import fingerprint
from healthgpt.data.ingest import IngestSummary, ingest
from healthgpt.data.preview import thumbnail_grid
from healthgpt.data.sources import SOURCES, ReaderOptions
from pipelines.metadata import counts_table, png_markdown, records_table, shard_metadata
from pipelines.resources import DataLocations

MANIFESTS = Path(__file__).resolve().parent.parent / "data_manifests"
OWNERS = ["team:data"]


class IngestConfig(dg.Config):
    """Reader options, overridable from run config."""

    image_size: int = 256
    language: str = "en"
    frontal_only: bool = True
    slice_stride: int = 1
    min_foreground_fraction: float = 0.05
    target_shard_mb: int = 256
    full_content_fingerprint: bool = False

    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(
            image_size=self.image_size,
            language=self.language,
            frontal_only=self.frontal_only,
            slice_stride=self.slice_stride,
            min_foreground_fraction=self.min_foreground_fraction,
        )


def source_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["source", name])


def ingested_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["ingested", name])


def _observe_factory(name: str) -> dg.SourceAsset:
    @dg.observable_source_asset(
        key=source_key(name),
        group_name="sources",
        description=f"The {name} source files on disk; data version = fingerprint of its files.",
    )
    def observe(locations: DataLocations) -> dg.DataVersion:
        return dg.DataVersion(fingerprint(locations.source_root(name)))

    return observe


def _log_progress(context: dg.AssetExecutionContext, summary: IngestSummary) -> None:
    rate = summary.items / summary.seconds if summary.seconds else 0.0
    context.log.info(
        f"{summary.source}: {summary.items} items ({rate:.1f}/s), {summary.records} records, "
        f"{summary.quarantined} quarantined"
    )


def _ingest_factory(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=ingested_key(name),
        deps=[source_key(name)],
        group_name="sources",
        kinds={"parquet", "python"},
        owners=OWNERS,
        description=f"{name} in the canonical record schema: Parquet shards plus quarantine.",
        automation_condition=dg.AutomationCondition.eager(),
    )
    def ingested(
        context: dg.AssetExecutionContext, config: IngestConfig, locations: DataLocations
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        summary = ingest(
            name,
            locations.source_root(name),
            locations.ingested_dir(name),
            config.reader_options(),
            target_shard_bytes=config.target_shard_mb << 20,
            progress=lambda s: _log_progress(context, s),
        )
        metadata = {
            "records": dg.MetadataValue.int(summary.records),
            "quarantined": dg.MetadataValue.int(summary.quarantined),
            "input_items": dg.MetadataValue.int(summary.items),
            "by_split": counts_table(summary.by_split, "split"),
            "by_modality": counts_table(summary.by_modality, "modality"),
            "quarantine_reasons": counts_table(summary.quarantine_reasons, "reason"),
            "preview": records_table(summary.preview),
            "path": dg.MetadataValue.path(str(locations.ingested_dir(name))),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            **shard_metadata(summary.shards),
        }
        if summary.thumbnails:
            metadata["thumbnails"] = png_markdown(thumbnail_grid(summary.thumbnails), name)
        return dg.MaterializeResult(metadata=metadata)

    return ingested


SOURCE_NAMES = sorted(SOURCES)
with warnings.catch_warnings():
    # Observable source assets are marked beta; the warning says nothing a user can act on.
    warnings.simplefilter("ignore", dg.BetaWarning)
    observed_sources = [_observe_factory(name) for name in SOURCE_NAMES]
ingested_assets = [_ingest_factory(name) for name in SOURCE_NAMES]
