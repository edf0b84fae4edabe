"""The Dagster code location: `dagster dev -m pipelines.definitions`.

Groups: sources (observed source files, ingestion: one pair per dataset of the registry,
`healthgpt.data.sources.registry`), mixture (VL-Health), training (VQ tokenizer, three
stages, out of process through Pipes), evaluation (benchmarks, report).
`HEALTHGPT_PROFILE=production` switches to the Kubernetes executor (see deploy/).
"""

from collections.abc import Mapping

import dagster as dg

from healthgpt.data.sources.registry import DatasetEntry, load_registry
from pipelines.automation import automation_definitions
from pipelines.checks import ingest_checks
from pipelines.evaluation import EvalModels, evaluation_assets
from pipelines.mixture import mixture_assets
from pipelines.production import executor_for_profile, training_pipes_client
from pipelines.resources import DataLocations
from pipelines.sources import source_assets
from pipelines.training import training_assets


def build_definitions(registry: Mapping[str, DatasetEntry] | None = None) -> dg.Definitions:
    """The project's definitions for the datasets of `registry` (default: the registry as
    the settings name it, read now)."""
    datasets = list((load_registry() if registry is None else registry).values())
    observed, ingested = source_assets(datasets)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[
                *observed,
                *ingested,
                *mixture_assets([entry.name for entry in datasets]),
                *training_assets,
                *evaluation_assets,
            ],
            asset_checks=ingest_checks(datasets),
            resources={
                "locations": DataLocations(),
                "eval_models": EvalModels(),
                "training_pipes": training_pipes_client(),
            },
            executor=executor_for_profile(),
        ),
        automation_definitions(datasets),
    )


defs = build_definitions()
