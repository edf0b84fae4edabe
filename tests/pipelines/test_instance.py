"""Both instance configurations are valid for this Dagster version and mean what we intend."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config  # the validation Dagster runs at load
from dagster._core.instance.config import dagster_instance_config  # no public export
from dagster._serdes import class_from_code_pointer

REPO = Path(__file__).resolve().parents[2]


def test_embedded_instance_loads_with_monitoring_retries_and_one_slot_pools(tmp_path):
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        pools = instance.get_concurrency_config().pool_config
        # Per-pool limits are not dagster.yaml settings; the default applies to every pool
        # without one (so to `gpu`), and `dagster instance concurrency set` overrides it.
        assert pools.default_pool_limit == 1
        assert pools.pool_granularity.value == "op"
    finally:
        instance.dispose()


@pytest.mark.filterwarnings("ignore:Found version mismatch between `dagster-shared`:UserWarning")
def test_production_instance_config_is_valid(monkeypatch):
    k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed")
    config, _ = dagster_instance_config(str(REPO / "deploy"))
    for section in ("scheduler", "run_coordinator", "run_launcher"):
        assert class_from_code_pointer(config[section]["module"], config[section]["class"])
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "healthgpt")
    launcher = process_config(k8s.K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert "HEALTHGPT_PROFILE=production" in launcher.value["env_vars"]
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for k, v in postgres.items() if isinstance(v, dict)} == {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
    }, "no credentials written into the file"


def test_helm_values_point_at_the_same_instance_settings():
    values = yaml.safe_load((REPO / "deploy" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False, "use a managed PostgreSQL"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["HEALTHGPT_PROFILE"] == "production"
