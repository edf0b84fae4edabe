"""Asset checks on the ingested shards: schema, unique ids, images present, expected counts.

For a chunked source the checks run per chunk partition, on that chunk's directory, and the
expected counts are scaled to one chunk (`healthgpt.data.ingest.checks.check_counts`).
"""

import warnings
from collections.abc import Iterable

import dagster as dg

from healthgpt.data.ingest.checks import (
    check_counts,
    check_images_present,
    check_schema,
    check_unique_ids,
)
from healthgpt.data.sources.registry import DatasetEntry, resolve
from pipelines.resources import DataLocations
from pipelines.sources import ingested_key, partitions_for, running_chunk

CHECKS = ("schema_valid", "ids_unique", "images_present", "counts_expected")


def _checks_factory(dataset: DatasetEntry | str) -> dg.AssetChecksDefinition:
    """The checks of one dataset's ingestion; its registry file holds the expected counts."""
    entry = resolve(dataset)
    name = entry.name
    key = ingested_key(name)
    partitions = partitions_for(name)

    with warnings.catch_warnings():
        # Partitioned check specs are marked preview; they are what checks a chunk alone.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [
            dg.AssetCheckSpec(check, asset=key, blocking=True, partitions_def=partitions)
            for check in CHECKS
        ]

    @dg.multi_asset_check(specs=specs, name=f"{name}_ingest_checks")
    def checks(context: dg.AssetCheckExecutionContext, locations: DataLocations):
        chunk = running_chunk(name, context.op_execution_context)
        directory = locations.ingested_dir(name, chunk)
        results = {
            "schema_valid": check_schema(directory),
            "ids_unique": check_unique_ids(directory),
            "images_present": check_images_present(directory),
            "counts_expected": check_counts(
                directory, entry.manifest_file, locations.source_root(entry), chunk
            ),
        }
        for check, (passed, details) in results.items():
            yield dg.AssetCheckResult(
                asset_key=key, check_name=check, passed=passed, metadata=details
            )

    return checks


def ingest_checks(datasets: Iterable[DatasetEntry]) -> list[dg.AssetChecksDefinition]:
    """The ingestion checks of every dataset in `datasets`."""
    return [_checks_factory(entry) for entry in datasets]
