"""Automation: observe the sources on a schedule, rebuild what depends on a changed source.

How it fits together:

1. `observe_sources_schedule` runs `observe_sources_job` on a cron (daily at 03:00 UTC by
   default, `HEALTHGPT_OBSERVE_CRON` to change it, `HEALTHGPT_OBSERVE_TIMEZONE` for its
   zone). The run observes every `source/<name>` whose root exists on disk, recording the
   source's fingerprint as its data version.
2. `automation_sensor` evaluates the assets' automation conditions. The ingestion assets are
   `AutomationCondition.eager()`: a new data version on `source/<name>` requests exactly
   `ingested/<name>`, an unchanged one requests nothing; the mixture follows its inputs the
   same way.
3. Training and evaluation are expensive, so they are not automatic unless
   `HEALTHGPT_AUTOMATE_TRAINING=1`: their assets take `training_automation_condition()`,
   which is `eager()` under that switch and `None` (manual only) otherwise.

A source ingested in chunks (`HEALTHGPT_CHUNKS_<NAME>`) is observed by its own job and
schedule (`observe_<name>`, same cron): a Dagster job holds assets of one partitioning only.
Its observation reports one data version per chunk, so eager rebuilds only changed chunks.

Both the schedule and the sensor start RUNNING by default, so `dagster dev` (webserver plus
daemon) keeps the data current with no clicks; either can be stopped in the UI
(Automation page), and the state is kept in the instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from healthgpt.data.sources.registry import DatasetEntry, resolve
from healthgpt.settings import DEFAULT_OBSERVE_CRON as DEFAULT_OBSERVE_CRON  # re-exported
from healthgpt.settings import settings
from pipelines.partitions import chunk_count
from pipelines.resources import DataLocations
from pipelines.sources import source_key

OBSERVE_CRON_ENV = "HEALTHGPT_OBSERVE_CRON"
OBSERVE_TIMEZONE_ENV = "HEALTHGPT_OBSERVE_TIMEZONE"
AUTOMATE_TRAINING_ENV = "HEALTHGPT_AUTOMATE_TRAINING"
OBSERVE_JOB_NAME = "observe_sources"


def observe_cron() -> str:
    """The observation schedule's cron string, from `HEALTHGPT_OBSERVE_CRON` (default daily)."""
    return settings().observe_cron


def training_automation_enabled() -> bool:
    return settings().automate_training


def training_automation_condition() -> dg.AutomationCondition | None:
    """For training and evaluation assets: `eager()` if `HEALTHGPT_AUTOMATE_TRAINING=1`, else
    `None`, so by default they run only when someone asks for them."""
    return dg.AutomationCondition.eager() if training_automation_enabled() else None


def observe_sources_job(
    names: Sequence[str], name: str = OBSERVE_JOB_NAME
) -> dg.UnresolvedAssetJobDefinition:
    """A job that runs the observation of the given sources."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*(source_key(n) for n in names)),
        description="Fingerprint every source; a changed fingerprint triggers its ingestion.",
    )


def observe_sources_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    datasets: Sequence[DatasetEntry | str],
    cron: str | None = None,
) -> dg.ScheduleDefinition:
    """Observes, at each tick, the datasets whose root exists (see `healthgpt.paths`).

    A dataset that is not on this machine is left out rather than observed as "missing":
    a new data version would request its ingestion, which would fail on the missing root.
    """
    cron = cron or observe_cron()
    entries = [resolve(d) for d in datasets]
    names = [e.name for e in entries]

    def observe_present_sources(context: dg.ScheduleEvaluationContext, locations: DataLocations):
        present = [e.name for e in entries if locations.source_root(e).is_dir()]
        if not present:
            return dg.SkipReason(f"no source root exists (looked for: {', '.join(names)})")
        return dg.RunRequest(asset_selection=[source_key(n) for n in present])

    try:
        return dg.schedule(
            cron_schedule=cron,
            name=f"{job.name}_schedule",
            job=job,
            execution_timezone=settings().observe_timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Observe the sources present on disk (cron from {OBSERVE_CRON_ENV}).",
        )(observe_present_sources)
    except dg.DagsterInvalidDefinitionError as error:
        raise ValueError(f"{OBSERVE_CRON_ENV}: {error}") from error


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's automation condition (assets without one are never requested)."""
    return dg.AutomationConditionSensorDefinition(
        "healthgpt_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Rebuilds ingestion and mixture assets when a source's data version changes.",
    )


def automation_definitions(datasets: Sequence[DatasetEntry | str]) -> dg.Definitions:
    """The observation jobs, their schedules and the automation sensor, to merge into `defs`:
    one job for the datasets ingested whole, one per dataset ingested in chunks."""
    entries = [resolve(d) for d in datasets]
    whole = [e for e in entries if chunk_count(e.name) is None]
    groups = [(OBSERVE_JOB_NAME, whole)] if whole else []
    groups += [(f"observe_{e.name}", [e]) for e in entries if chunk_count(e.name) is not None]
    jobs = [
        observe_sources_job([e.name for e in members], job_name) for job_name, members in groups
    ]
    return dg.Definitions(
        jobs=jobs,
        schedules=[
            observe_sources_schedule(job, members)
            for job, (_, members) in zip(jobs, groups, strict=True)
        ],
        sensors=[automation_sensor()],
    )
