"""The Dagster code location: `dagster dev -m pipelines.definitions`.

Groups: sources (observed source files, ingestion), mixture (VL-Health), training (VQ
tokenizer, three stages, out of process through Pipes), evaluation (benchmarks, report).
`HEALTHGPT_PROFILE=production` switches to the Kubernetes executor (see deploy/).
"""

import dagster as dg

from pipelines.automation import automation_definitions
from pipelines.checks import ingest_checks
from pipelines.evaluation import EvalModels, evaluation_assets
from pipelines.mixture import mixture_assets
from pipelines.production import executor_for_profile, training_pipes_client
from pipelines.resources import DataLocations
from pipelines.sources import SOURCE_NAMES, ingested_assets, observed_sources
from pipelines.training import training_assets

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[
            *observed_sources,
            *ingested_assets,
            *mixture_assets,
            *training_assets,
            *evaluation_assets,
        ],
        asset_checks=ingest_checks,
        resources={
            "locations": DataLocations(),
            "eval_models": EvalModels(),
            "training_pipes": training_pipes_client(),
        },
        executor=executor_for_profile(),
    ),
    automation_definitions(SOURCE_NAMES),
)
