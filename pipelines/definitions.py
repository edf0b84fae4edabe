"""The Dagster code location: `dagster dev -m pipelines.definitions`."""

from __future__ import annotations

import dagster as dg

from pipelines.checks import ingest_checks
from pipelines.resources import DataLocations
from pipelines.sources import ingested_assets, observed_sources

defs = dg.Definitions(
    assets=[*observed_sources, *ingested_assets],
    asset_checks=ingest_checks,
    resources={"locations": DataLocations()},
)
