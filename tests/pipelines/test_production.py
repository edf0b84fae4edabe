"""The production profile: the k8s executor and the torchrun training pod, checked without a
cluster (Dagster validates the executor config; dagster-k8s builds the real V1Pod)."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import pytest

from pipelines import production
from pipelines.definitions import defs as project_defs

pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed")
# dagster-k8s 0.29.27 is the newest on the package index; it warns that it is one patch
# behind dagster 1.13.28 when imported. Harmless here, and the only warning allowed.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Found version mismatch between `dagster-shared`:UserWarning"
)


def test_profile_defaults_to_local_and_rejects_unknown(monkeypatch):
    monkeypatch.delenv(production.PROFILE_ENV, raising=False)
    assert production.profile() == "local"
    assert production.executor_for_profile() is None
    monkeypatch.setenv(production.PROFILE_ENV, "prod")
    with pytest.raises(ValueError, match="expected one of local, production"):
        production.profile()


def test_production_profile_runs_every_asset_step_as_a_kubernetes_job(monkeypatch):
    monkeypatch.setenv(production.PROFILE_ENV, "production")
    monkeypatch.setenv("HEALTHGPT_IMAGE", "registry.example/healthgpt:1.2.3")
    monkeypatch.setenv("HEALTHGPT_K8S_NAMESPACE", "research")
    executor = production.executor_for_profile()
    defs = dg.Definitions.merge(project_defs, dg.Definitions(executor=executor))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "healthgpt_k8s"
    config = production.k8s_executor_config()
    assert config["job_image"] == "registry.example/healthgpt:1.2.3"
    assert config["job_namespace"] == "research"
    assert "HEALTHGPT_DATA_DIR=/data/outputs" in config["env_vars"]
    assert config["volume_mounts"] == [{"name": "data", "mountPath": "/data"}]


def test_executor_config_passes_dagster_k8s_schema():
    from dagster._config import process_config  # the validation Dagster runs at launch
    from dagster_k8s import k8s_job_executor

    schema = k8s_job_executor.config_schema.config_type
    config = production.k8s_executor_config(image="img:1")
    assert process_config(schema, config).success
    config["step_k8s_config"]["no_such_section"] = {}
    assert not process_config(schema, config).success


@pytest.mark.parametrize(("nproc", "gpus"), [(1, 1), (4, 4), (8, 8)])
def test_training_pod_is_a_valid_pod_with_gpus_and_torchrun(nproc, gpus):
    from dagster_k8s.pipes import build_pod_body

    spec = production.training_pod_spec(nproc, gpus, "img:2", ["--stage", "2"])
    # What PipesK8sClient.run does with base_pod_spec: it raises on any unknown field.
    pod = build_pod_body(
        pod_name="train-stage2",
        image=None,
        command=None,
        env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"},
        base_pod_meta=None,
        base_pod_spec=spec,
    )
    container = pod.spec.containers[0]
    assert container.image == "img:2"
    assert container.command == [
        "torchrun",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        "pipelines.train_entry",
        "--stage",
        "2",
    ]
    assert container.resources.requests["nvidia.com/gpu"] == str(gpus)
    assert container.resources.limits["nvidia.com/gpu"] == str(gpus)
    assert pod.spec.restart_policy == "Never"
    env = {e.name: e.value for e in container.env}
    assert env["DAGSTER_PIPES_CONTEXT"] == "ctx", "Pipes must reach the torchrun container"
    assert env["HEALTHGPT_DATA_DIR"] == "/data/outputs"
    mounts = {m.mount_path for m in container.volume_mounts}
    assert mounts == {"/data", "/dev/shm"}
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert volumes["data"].persistent_volume_claim.claim_name == "healthgpt-data"
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)


@pytest.mark.parametrize(
    ("nproc", "gpus", "image", "message"),
    [(0, 1, "img", "nproc_per_node"), (4, 2, "img", "need 4 GPUs"), (1, 1, "", "image")],
)
def test_training_pod_rejects_inconsistent_requests(nproc, gpus, image, message):
    with pytest.raises(ValueError, match=message):
        production.training_pod_spec(nproc, gpus, image, [])


def test_step_and_training_pods_get_the_chunk_plans_and_shard_location(monkeypatch):
    monkeypatch.setenv("HEALTHGPT_CHUNKS_MIMIC_CXR", "64")
    monkeypatch.setenv("HEALTHGPT_SHARDS_URL", "s3://bucket/healthgpt")
    monkeypatch.setenv("HEALTHGPT_UNRELATED", "x")
    env = production.data_env()
    assert env["HEALTHGPT_CHUNKS_MIMIC_CXR"] == "64"
    assert env["HEALTHGPT_SHARDS_URL"] == "s3://bucket/healthgpt"
    assert "HEALTHGPT_UNRELATED" not in env
    assert "HEALTHGPT_CHUNKS_MIMIC_CXR=64" in production.k8s_executor_config("img")["env_vars"]


def test_training_stage_under_production_submits_a_torchrun_gpu_pod(monkeypatch, tmp_path):
    k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the production extra")
    from pipelines.resources import DataLocations
    from pipelines.training import train_stage2

    monkeypatch.setenv("HEALTHGPT_PROFILE", "production")
    monkeypatch.setenv("HEALTHGPT_IMAGE", "registry.example/healthgpt:abc123")
    assert isinstance(production.training_pipes_client(), k8s.PipesK8sClient)
    (tmp_path / "checkpoints" / "stage1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "stage1" / "CURRENT.json").write_text(
        '{"final": "/data/outputs/checkpoints/stage1/runs/x/final"}'
    )
    pods = []

    class RecordingK8sClient(k8s.PipesK8sClient):
        def run(self, *, context, base_pod_spec, **kwargs):
            pods.append(base_pod_spec)
            return SimpleNamespace(get_materialize_result=lambda: dg.MaterializeResult())

    result = dg.materialize(
        [train_stage2],
        resources={
            "locations": DataLocations(data_dir=str(tmp_path)),
            "training_pipes": RecordingK8sClient(),
        },
        run_config={"ops": {"train_stage2": {"config": {"nproc_per_node": 8}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (pod,) = pods
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/healthgpt:abc123"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    command = container["command"]
    assert command[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8"]
    assert command[4:8] == ["-m", "pipelines.train_entry", "--stage", "stage2"]
    assert command[command.index("--init") + 1] == "/data/outputs/checkpoints/stage1/runs/x/final"


def test_training_pods_need_an_image(monkeypatch):
    monkeypatch.delenv("HEALTHGPT_IMAGE", raising=False)
    with pytest.raises(ValueError, match="HEALTHGPT_IMAGE"):
        production.training_pod_for(["--stage", "stage1"], 1)
