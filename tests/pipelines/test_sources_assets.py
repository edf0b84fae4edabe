from __future__ import annotations

import dagster as dg
import fsspec
import pytest
from dagster._core.definitions.observe import observe as observe_assets  # no public export

from healthgpt.data.shards import read_manifest
from healthgpt.data.sources.registry import load_registry
from healthgpt.paths import MANIFESTS_DIR as MANIFESTS
from pipelines.checks import _checks_factory
from pipelines.definitions import defs
from pipelines.resources import DataLocations
from pipelines.sources import _ingest_factory, _observe_factory, ingested_key


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_dataset_has_an_ingestion_asset_with_ui_metadata_and_a_manifest():
    graph = defs.resolve_asset_graph()
    for name in load_registry():
        node = graph.get(ingested_key(name))
        assert node.group_name == "sources"
        assert node.owners == ["team:data"]
        assert "parquet" in node.kinds
        assert node.description
        assert (MANIFESTS / f"{name}.yaml").is_file(), f"data_manifests/{name}.yaml missing"


@pytest.fixture
def toy_assets(toy_source):
    return [_observe_factory("toy"), _ingest_factory("toy"), _checks_factory("toy")]


def test_materialize_toy_source_reports_counts_and_passes_checks(tmp_path, toy_assets):
    (tmp_path / "sources" / "toy").mkdir(parents=True)
    locations = DataLocations(data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"))
    result = dg.materialize(
        toy_assets[1:],
        resources={"locations": locations},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"ingested__toy": {"config": {"image_size": 64}}}},
    )
    assert result.success
    materialization = result.asset_materializations_for_node("ingested__toy")[0]
    assert materialization.metadata["records"].value == 10
    assert materialization.metadata["quarantined"].value == 0
    assert "thumbnails" in materialization.metadata
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "schema_valid",
        "ids_unique",
        "images_present",
        "counts_expected",
    }
    assert all(c.passed for c in checks)
    assert (tmp_path / "out" / "ingested" / "toy" / "_manifest.json").is_file()


def test_observation_version_changes_with_the_files(tmp_path, toy_assets):
    root = tmp_path / "sources" / "toy"
    root.mkdir(parents=True)
    locations = DataLocations(sources_dir=str(tmp_path / "sources"))
    observe = toy_assets[0]

    def version() -> str:
        instance = dg.DagsterInstance.ephemeral()
        result = observe_assets([observe], resources={"locations": locations}, instance=instance)
        return result.get_asset_observation_events()[0].event_specific_data.asset_observation.tags[
            "dagster/data_version"
        ]

    first = version()
    assert version() == first
    (root / "new.jpg").write_bytes(b"1")
    assert version() != first


def test_ingestion_asset_writes_to_an_object_store_url_and_its_checks_read_it(tmp_path, toy_assets):
    (tmp_path / "sources" / "toy").mkdir(parents=True)
    bucket = f"memory://assets-{tmp_path.name}"
    locations = DataLocations(
        data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"), shards_url=bucket
    )
    try:
        result = dg.materialize(
            toy_assets[1:],
            resources={"locations": locations},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())
        assert read_manifest(f"{bucket}/ingested/toy")["summary"]["records"] == 10
        assert not (tmp_path / "out" / "ingested").exists(), "nothing written locally"
    finally:
        fsspec.filesystem("memory").rm(bucket, recursive=True)
