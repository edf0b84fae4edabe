"""Automation: a changed source requests exactly its ingestion; nothing else moves."""

from __future__ import annotations

import dagster as dg
import pytest

from healthgpt.data import sources
from healthgpt.data.sources.registry import load_registry
from pipelines import automation
from pipelines.definitions import defs as project_defs
from pipelines.resources import DataLocations
from pipelines.sources import (
    _ingest_factory,
    _observe_factory,
    ingested_key,
    source_key,
)

NAMES = ("toy", "toy2")


class Evaluator:
    """Runs Dagster's automation evaluation tick by tick, carrying the cursor like the sensor.

    Tests tick once before the first event, as the running sensor would: conditions such as
    "dependency updated" compare with the previous tick, so there must be one.
    """

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self) -> set[dg.AssetKey]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {r.key for r in result.results if r.true_subset.size > 0}


@pytest.fixture
def toy_defs(monkeypatch, tmp_path) -> dg.Definitions:
    """Two toy sources with the real factories, plus a training-like asset downstream."""
    for name in NAMES:
        monkeypatch.setitem(sources.SOURCES, name, "tests.conftest:ToyReader")
        (tmp_path / "sources" / name).mkdir(parents=True)

    @dg.asset(
        key="train_toy",
        deps=[ingested_key(n) for n in NAMES],
        automation_condition=automation.training_automation_condition(),
    )
    def train_toy() -> None:
        return None

    assets = [*map(_observe_factory, NAMES), *map(_ingest_factory, NAMES), train_toy]
    locations = DataLocations(data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"))
    return dg.Definitions.merge(
        dg.Definitions(assets=assets, resources={"locations": locations}),
        automation.automation_definitions(NAMES),
    )


def observe(instance: dg.DagsterInstance, name: str, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetObservation(source_key(name), tags={"dagster/data_version": version})
    )


def materialized(instance: dg.DagsterInstance, *keys: dg.AssetKey) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def test_new_data_version_requests_exactly_that_ingestion(toy_defs):
    instance = dg.DagsterInstance.ephemeral()
    ticks = Evaluator(toy_defs, instance)
    assert ticks.tick() == set(), "never-observed sources must not trigger ingestion"

    observe(instance, "toy", "v1")
    observe(instance, "toy2", "v1")
    assert ticks.tick() == {ingested_key("toy"), ingested_key("toy2")}
    materialized(instance, ingested_key("toy"), ingested_key("toy2"))
    assert ticks.tick() == set()

    observe(instance, "toy", "v1")
    observe(instance, "toy2", "v1")
    assert ticks.tick() == set(), "an unchanged observation must request nothing"

    observe(instance, "toy", "v2")
    observe(instance, "toy2", "v1")
    assert ticks.tick() == {ingested_key("toy")}
    assert ticks.tick() == set(), "a request is made once, not on every tick"


def test_scheduled_observation_job_drives_the_rebuild(toy_defs, tmp_path):
    """The real path: the observation job fingerprints the files on disk."""
    instance = dg.DagsterInstance.ephemeral()
    ticks = Evaluator(toy_defs, instance)
    observe_job = toy_defs.resolve_job_def(automation.OBSERVE_JOB_NAME)
    schedule = toy_defs.resolve_schedule_def("observe_sources_schedule")
    locations = DataLocations(sources_dir=str(tmp_path / "sources"))

    def scheduled_observation() -> None:
        """A schedule tick, then the run it requests, as the daemon would do."""
        context = dg.build_schedule_context(instance=instance, resources={"locations": locations})
        (request,) = schedule.evaluate_tick(context).run_requests
        selection = request.asset_selection
        result = observe_job.execute_in_process(instance=instance, asset_selection=selection)
        assert result.success

    assert ticks.tick() == set()
    scheduled_observation()
    assert ticks.tick() == {ingested_key("toy"), ingested_key("toy2")}
    materialized(instance, ingested_key("toy"), ingested_key("toy2"))
    assert ticks.tick() == set()

    scheduled_observation()
    assert ticks.tick() == set(), "same files, same fingerprint: nothing to rebuild"

    (tmp_path / "sources" / "toy2" / "new-image.png").write_bytes(b"\x89PNG")
    scheduled_observation()
    assert ticks.tick() == {ingested_key("toy2")}


def test_schedule_observes_only_the_sources_present_on_disk(toy_defs, tmp_path):
    schedule = toy_defs.resolve_schedule_def("observe_sources_schedule")
    locations = DataLocations(sources_dir=str(tmp_path / "sources"))
    context = dg.build_schedule_context(resources={"locations": locations})
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.asset_selection == [source_key("toy"), source_key("toy2")]

    (tmp_path / "sources" / "toy").rmdir()
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.asset_selection == [source_key("toy2")]

    (tmp_path / "sources" / "toy2").rmdir()
    tick = schedule.evaluate_tick(context)
    assert tick.run_requests == [] and "no source root exists" in tick.skip_message


def test_training_is_not_automatic_by_default(toy_defs, monkeypatch):
    monkeypatch.delenv(automation.AUTOMATE_TRAINING_ENV, raising=False)
    assert automation.training_automation_condition() is None
    instance = dg.DagsterInstance.ephemeral()
    ticks = Evaluator(toy_defs, instance)
    ticks.tick()
    for name in NAMES:
        observe(instance, name, "v1")
    assert ticks.tick() == {ingested_key("toy"), ingested_key("toy2")}
    materialized(instance, ingested_key("toy"), ingested_key("toy2"))
    assert dg.AssetKey("train_toy") not in ticks.tick()


def test_training_switch_makes_training_follow_its_data(monkeypatch, tmp_path):
    monkeypatch.setenv(automation.AUTOMATE_TRAINING_ENV, "1")
    assert automation.training_automation_condition() == dg.AutomationCondition.eager()
    # The condition is read when the asset is defined, so build the definitions afterwards.
    for name in NAMES:
        monkeypatch.setitem(sources.SOURCES, name, "tests.conftest:ToyReader")

    @dg.asset(
        deps=[ingested_key(n) for n in NAMES],
        automation_condition=automation.training_automation_condition(),
    )
    def train_toy() -> None:
        return None

    defs = dg.Definitions(
        assets=[*map(_observe_factory, NAMES), *map(_ingest_factory, NAMES), train_toy],
        resources={"locations": DataLocations(sources_dir=str(tmp_path))},
    )
    instance = dg.DagsterInstance.ephemeral()
    ticks = Evaluator(defs, instance)
    assert ticks.tick() == set()
    for name in NAMES:
        observe(instance, name, "v1")
    train = dg.AssetKey("train_toy")
    # Eager requests the training in the same run as the ingestions it waits for.
    assert ticks.tick() == {ingested_key("toy"), ingested_key("toy2"), train}
    materialized(instance, ingested_key("toy"), ingested_key("toy2"), train)
    assert ticks.tick() == set()
    observe(instance, "toy", "v2")
    assert ticks.tick() == {ingested_key("toy"), train}


def test_observe_cron_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(automation.OBSERVE_CRON_ENV, raising=False)
    assert automation.observe_cron() == automation.DEFAULT_OBSERVE_CRON
    monkeypatch.setenv(automation.OBSERVE_CRON_ENV, "*/15 * * * *")
    job = automation.observe_sources_job(["vqa_rad"])
    assert automation.observe_sources_schedule(job, ["vqa_rad"]).cron_schedule == "*/15 * * * *"
    monkeypatch.setenv(automation.OBSERVE_CRON_ENV, "every day")
    with pytest.raises(ValueError, match=automation.OBSERVE_CRON_ENV):
        automation.observe_sources_schedule(job, ["vqa_rad"])


def test_project_definitions_with_automation_load_and_observe_every_source():
    defs = project_defs
    names = sorted(load_registry())
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(automation.OBSERVE_JOB_NAME)
    assert sorted(node.name for node in job.nodes) == sorted(f"source__{n}" for n in names)
    schedule = defs.resolve_schedule_def("observe_sources_schedule")
    assert schedule.job_name == automation.OBSERVE_JOB_NAME
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = defs.resolve_sensor_def("healthgpt_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    graph = defs.resolve_asset_graph()
    targeted = sensor.asset_selection.resolve(graph)
    assert {ingested_key(n) for n in names} <= targeted
