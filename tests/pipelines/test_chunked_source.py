"""A source ingested in chunk partitions: each chunk is its own partition with its own checks,
the mixture reads all chunks, and a changed image rebuilds exactly its chunk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.observe import observe as observe_assets  # no public export

from healthgpt.data.ingest.run import IncompleteSource, ingested_parts
from healthgpt.data.mixture.build import input_files
from healthgpt.data.mixture.card import read_licenses
from healthgpt.data.samples import build_sample_source
from healthgpt.data.sources import reader_class
from healthgpt.eval import vqa
from healthgpt.paths import MANIFESTS_DIR as MANIFESTS
from pipelines import automation
from pipelines.checks import _checks_factory
from pipelines.resources import DataLocations
from pipelines.sources import _ingest_factory, _observe_factory, ingested_key
from tests.data.outputs import records, run
from tests.data.sample_edits import add_mimic_study

SOURCE = "mimic_cxr"
CHUNK_IDS = ["000", "001", "002"]


@pytest.fixture
def chunked(monkeypatch, tmp_path):
    monkeypatch.setenv("HEALTHGPT_CHUNKS_MIMIC_CXR", "3")
    root = build_sample_source(SOURCE, tmp_path / "sources")
    locations = DataLocations(data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"))
    assets = [_observe_factory(SOURCE), _ingest_factory(SOURCE), _checks_factory(SOURCE)]
    return root, locations, assets


def test_each_chunk_is_a_partition_with_passing_checks_and_the_mixture_reads_them_all(
    chunked, tmp_path
):
    root, locations, (_, ingested, checks) = chunked
    assert ingested.partitions_def.get_partition_keys() == CHUNK_IDS
    instance = dg.DagsterInstance.ephemeral()
    whole = locations.ingested_dir(SOURCE)
    for index, chunk_id in enumerate(CHUNK_IDS):
        error, missing = (
            (IncompleteSource, f"{3 - index} of 3 chunks not ingested")
            if index
            else (FileNotFoundError, "never completed")
        )
        with pytest.raises(error, match=missing):
            input_files({SOURCE: whole})
        if index:
            with pytest.raises(IncompleteSource):
                vqa.test_shards(whole)  # evaluation refuses a partial source too
        result = dg.materialize(
            [ingested, checks],
            partition_key=chunk_id,
            resources={"locations": locations},
            instance=instance,
        )
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 4 and all(e.passed for e in evaluations)
        assert (whole / f"chunk={chunk_id}" / "_manifest.json").is_file()

    assert [p.name for p in ingested_parts(whole)] == [f"chunk={c}" for c in CHUNK_IDS]
    reference = tmp_path / "reference"
    run(SOURCE, root, reference)
    chunk_ids = Counter(r["id"] for part in ingested_parts(whole) for r in records(part))
    assert chunk_ids == Counter(r["id"] for r in records(reference))
    assert {name for name, _ in input_files({SOURCE: whole})} == {SOURCE}
    renamed = read_licenses({"chest": whole}, MANIFESTS)
    assert renamed["chest"].startswith("PhysioNet"), "the source is read from a chunk manifest"


def test_a_chunked_source_refuses_a_run_without_a_partition(chunked):
    _, locations, (_, ingested, _) = chunked
    with pytest.raises(Exception, match="partition"):
        dg.materialize([ingested], resources={"locations": locations})


class Ticks:
    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance, self.cursor = defs, instance, None

    def requested(self) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            key
            for r in result.results
            if r.key == ingested_key(SOURCE)
            for key in r.true_subset.expensively_compute_partition_keys()
        }


def test_a_changed_image_rebuilds_only_its_chunk(chunked):
    root, locations, (observe, ingested, _) = chunked
    defs = dg.Definitions(assets=[observe, ingested], resources={"locations": locations})
    instance = dg.DagsterInstance.ephemeral()
    ticks = Ticks(defs, instance)

    def observe_now() -> None:
        observe_assets([observe], resources={"locations": locations}, instance=instance)

    assert ticks.requested() == set()
    observe_now()
    assert ticks.requested() == set(CHUNK_IDS), "the first observation requests every chunk"

    def materialized(*chunk_ids: str) -> None:
        for chunk_id in chunk_ids:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(ingested_key(SOURCE), partition=chunk_id)
            )

    materialized(*CHUNK_IDS)
    assert ticks.requested() == set()
    observe_now()
    assert ticks.requested() == set(), "an unchanged source requests nothing"

    reader = reader_class(SOURCE)(root)
    image = next(root.rglob("*.jpg"))
    expected = _chunk_id(reader.chunk_key(image.relative_to(root).as_posix()))
    os.utime(image, ns=(10**18, 10**18))
    observe_now()
    assert ticks.requested() == {expected}
    materialized(expected)
    assert ticks.requested() == set()

    os.utime(next(root.glob("mimic-cxr-2.0.0-split.csv*")), ns=(10**18, 10**18))
    observe_now()
    assert ticks.requested() == set(), "a touched table with the same rows changes nothing"

    add_mimic_study(root, "19999999", "59999999", "abcdef01-new-image")
    observe_now()
    assert ticks.requested() == {_chunk_id("files/p19/p19999999/s59999999")}, "a new study"


def _chunk_id(key: str) -> str:
    from healthgpt.data.sources.chunks import ChunkPlan

    return ChunkPlan(SOURCE, 3).chunk_id(key)


def test_the_definitions_load_with_chunked_sources(monkeypatch):
    monkeypatch.setenv("HEALTHGPT_CHUNKS_MIMIC_CXR", "4")
    monkeypatch.setenv("HEALTHGPT_CHUNKS_PATHVQA", "2")
    assets = [_observe_factory(n) for n in ("mimic_cxr", "pathvqa")]
    assets += [_ingest_factory(n) for n in ("mimic_cxr", "pathvqa")]
    checks = [_checks_factory(n) for n in ("mimic_cxr", "pathvqa")]
    defs = dg.Definitions.merge(
        dg.Definitions(
            assets=assets, asset_checks=checks, resources={"locations": DataLocations()}
        ),
        automation.automation_definitions(["mimic_cxr", "pathvqa"]),
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert len(graph.get(ingested_key("mimic_cxr")).partitions_def.get_partition_keys()) == 4


def test_a_bad_chunk_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HEALTHGPT_CHUNKS_MIMIC_CXR", "many")
    with pytest.raises(ValueError, match="HEALTHGPT_CHUNKS_MIMIC_CXR must be a positive"):
        _ingest_factory("mimic_cxr")


def test_a_chunked_source_has_its_own_observation_job_and_schedule(chunked, tmp_path):
    root, locations, (observe, ingested, _) = chunked
    defs = dg.Definitions.merge(
        dg.Definitions(assets=[observe, ingested], resources={"locations": locations}),
        automation.automation_definitions([SOURCE]),
    )
    schedule = defs.resolve_schedule_def(f"observe_{SOURCE}_schedule")
    context = dg.build_schedule_context(resources={"locations": locations})
    (request,) = schedule.evaluate_tick(context).run_requests
    job = defs.resolve_job_def(schedule.job_name)
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, asset_selection=request.asset_selection)
    assert result.success
    observed = {
        e.event_specific_data.asset_observation.partition
        for e in result.get_asset_observation_events()
    }
    assert observed == set(CHUNK_IDS), "one data version per chunk"


def test_the_whole_code_location_loads_with_chunked_sources():
    """The project's definitions are built at import, so load them in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHGPT_")}
    env.update(HEALTHGPT_CHUNKS_MIMIC_CXR="4", HEALTHGPT_CHUNKS_PATHVQA="2")
    script = (
        "import dagster as dg\n"
        "from pipelines.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "graph = defs.resolve_asset_graph()\n"
        "key = dg.AssetKey(['ingested', 'mimic_cxr'])\n"
        "print(len(graph.get(key).partitions_def.get_partition_keys()))\n"
        "print(sorted(j.name for j in defs.jobs if j.name.startswith('observe')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "4"
    assert lines[-1] == "['observe_mimic_cxr', 'observe_pathvqa', 'observe_sources']"
