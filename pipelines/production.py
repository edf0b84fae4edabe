"""The production profile: steps as Kubernetes jobs, training as multi-GPU torchrun pods.

`HEALTHGPT_PROFILE=production` selects it (default `local`: Dagster's multiprocess executor
on one machine). Everything here is configuration built from the settings
(`healthgpt.settings`, which reads these variables); the
instance side (PostgreSQL storage, `K8sRunLauncher`) lives in `deploy/dagster.yaml`.

| variable                   | default            | meaning                                    |
|----------------------------|--------------------|--------------------------------------------|
| `HEALTHGPT_PROFILE`        | `local`            | `production` turns on the k8s executor     |
| `HEALTHGPT_IMAGE`          | the run pod's      | image of step pods and training pods       |
| `HEALTHGPT_K8S_NAMESPACE`  | the run's          | namespace of step pods                     |
| `HEALTHGPT_DATA_PVC`       | `healthgpt-data`   | ReadWriteMany claim mounted at `/data`     |
| `HEALTHGPT_MAX_STEP_PODS`  | `8`                | step pods running at once, per run         |
| `HEALTHGPT_ENV_SECRET`     | `healthgpt-env`    | secret with e.g. `HEALTHGPT_DEID_SALT`     |

`dagster_k8s` is imported only when a production object is built, so the local profile does
not need it installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from healthgpt.settings import settings

PROFILE_ENV = "HEALTHGPT_PROFILE"
PROFILES = ("local", "production")
DATA_MOUNT = "/data"
TRAIN_ENTRY = "pipelines.train_entry"
GPU_RESOURCE = "nvidia.com/gpu"


def profile() -> str:
    value = settings().profile
    if value not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={value!r}; expected one of {', '.join(PROFILES)}")
    return value


def _data_volume() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shared data volume: every step pod and training pod sees the same `/data`."""
    claim = settings().data_pvc
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "data", "mountPath": DATA_MOUNT}]
    return volumes, mounts


# Settings every pod must share with the code server: where shards go, the chunk plans (a
# step pod whose chunk count differed would not find the run's partition) and the registry
# folders (a pod must load the same datasets; put them in the image or under /data).
FORWARDED_ENV = ("HEALTHGPT_SHARDS_URL", "HEALTHGPT_MIXTURE_PRESET", "HEALTHGPT_REGISTRY_DIRS")
FORWARDED_PREFIXES = ("HEALTHGPT_CHUNKS_",)


def data_env() -> dict[str, str]:
    """Where outputs and sources live inside the pods (see healthgpt.paths), plus the
    settings of this code location that the pods must agree with."""
    forwarded = {
        name: value
        for name, value in settings().variables.items()
        if name in FORWARDED_ENV or name.startswith(FORWARDED_PREFIXES)
    }
    return {
        "HEALTHGPT_DATA_DIR": f"{DATA_MOUNT}/outputs",
        "HEALTHGPT_SOURCES_DIR": f"{DATA_MOUNT}/sources",
        **forwarded,
    }


def k8s_executor_config(image: str | None = None) -> dict[str, Any]:
    """Config of `dagster_k8s.k8s_job_executor`: one Kubernetes job per step."""
    image = image or settings().image
    volumes, mounts = _data_volume()
    config: dict[str, Any] = {
        "image_pull_policy": "IfNotPresent",
        "env_vars": [f"{k}={v}" for k, v in data_env().items()],
        "env_secrets": [settings().env_secret],
        "volumes": volumes,
        "volume_mounts": mounts,
        "max_concurrent": settings().max_step_pods,
        "labels": {"app.kubernetes.io/part-of": "healthgpt"},
        "step_k8s_config": {
            # Ingestion and mixture steps are CPU-bound and stream: modest, bounded requests.
            "container_config": {
                "resources": {
                    "requests": {"cpu": "2", "memory": "8Gi"},
                    "limits": {"cpu": "4", "memory": "16Gi"},
                }
            },
        },
    }
    if image:
        config["job_image"] = image
    if namespace := settings().k8s_namespace:
        config["job_namespace"] = namespace
    return config


def k8s_executor(image: str | None = None) -> dg.ExecutorDefinition:
    """`k8s_job_executor` configured for this project (needs `dagster-k8s`)."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(image), name="healthgpt_k8s")


def executor_for_profile() -> dg.ExecutorDefinition | None:
    """The executor for `dg.Definitions(executor=...)`: None (Dagster's default) locally."""
    return k8s_executor() if profile() == "production" else None


def _gpu_toleration() -> dict[str, str]:
    return {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def torchrun_command(
    nproc_per_node: int, args: Sequence[str] = (), launcher: Sequence[str] = ("torchrun",)
) -> list[str]:
    """`torchrun` on one node, one process per GPU, running the training entry point.
    Locally `launcher` is `python -m torch.distributed.run`, the same program from this
    interpreter's environment."""
    return [
        *launcher,
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        TRAIN_ENTRY,
        *args,
    ]


def training_pod_spec(
    nproc_per_node: int,
    gpus: int,
    image: str,
    command: Sequence[str],
    *,
    cpu: str = "8",
    memory: str = "64Gi",
    shm_size: str = "16Gi",
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `base_pod_spec` for `PipesK8sClient.run`: one pod, `gpus` GPUs, torchrun inside.

    `command` holds the arguments of `pipelines.train_entry` (for example
    `["--stage", "2", "--preset", "phi3-mini"]`); the container runs
    `torchrun --standalone --nproc_per_node=N -m pipelines.train_entry <command>`.
    `/dev/shm` is a memory volume because NCCL and DataLoader workers need more than the
    container default of 64 MiB. Pipes injects its own environment variables into the first
    container, so only the project's variables are set here.
    """
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    if gpus < nproc_per_node:
        raise ValueError(f"{nproc_per_node} processes need {nproc_per_node} GPUs, got {gpus}")
    if not image:
        raise ValueError("a training pod needs an image")
    volumes, mounts = _data_volume()
    gpu = {GPU_RESOURCE: str(gpus)}
    env = {**data_env(), "OMP_NUM_THREADS": "1", "NCCL_DEBUG": "WARN"}
    container = {
        "name": "train",
        "image": image,
        "command": torchrun_command(nproc_per_node, command),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "envFrom": [{"secretRef": {"name": settings().env_secret}}],
        "resources": {
            "requests": {**gpu, "cpu": cpu, "memory": memory},
            "limits": {**gpu, "memory": memory},
        },
        "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            *volumes,
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
        ],
        "tolerations": [_gpu_toleration()],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return spec


def training_pipes_client() -> dg.PipesClient:
    """How training stages are launched: a local `torchrun` process, or under the production
    profile a GPU pod through `PipesK8sClient` (same entry point, same arguments)."""
    if profile() != "production":
        return dg.PipesSubprocessClient()
    from dagster_k8s import PipesK8sClient

    return PipesK8sClient()


def training_pod_for(args: Sequence[str], nproc_per_node: int) -> dict[str, Any]:
    """The pod a training stage submits under the production profile: one GPU per process,
    the image from `HEALTHGPT_IMAGE`."""
    image = settings().image
    if not image:
        raise ValueError("HEALTHGPT_IMAGE must name the image of training pods")
    return training_pod_spec(nproc_per_node, nproc_per_node, image, args)
