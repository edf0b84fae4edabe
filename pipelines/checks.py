"""Asset checks on the ingested shards: schema, unique ids, images present, expected counts."""

import dagster as dg

from healthgpt.data import validate
from pipelines.resources import DataLocations
from pipelines.sources import MANIFESTS, SOURCE_NAMES, ingested_key

CHECKS = ("schema_valid", "ids_unique", "images_present", "counts_expected")


def _checks_factory(name: str) -> dg.AssetChecksDefinition:
    key = ingested_key(name)

    @dg.multi_asset_check(
        specs=[dg.AssetCheckSpec(check, asset=key, blocking=True) for check in CHECKS],
        name=f"{name}_ingest_checks",
    )
    def checks(locations: DataLocations):
        directory = locations.ingested_dir(name)
        results = {
            "schema_valid": validate.check_schema(directory),
            "ids_unique": validate.check_unique_ids(directory),
            "images_present": validate.check_images_present(directory),
            "counts_expected": validate.check_counts(
                directory, MANIFESTS / f"{name}.yaml", locations.source_root(name)
            ),
        }
        for check, (passed, details) in results.items():
            yield dg.AssetCheckResult(
                asset_key=key, check_name=check, passed=passed, metadata=details
            )

    return checks


ingest_checks = [_checks_factory(name) for name in SOURCE_NAMES]
