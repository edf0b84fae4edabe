"""Training group: the VQ tokenizer, the VQ codes of the generation targets, and the three
HealthGPT stages, out of process via Pipes.

Each stage asset launches `pipelines.train_entry` (`healthgpt.train.entry` plus Pipes) under
torchrun with `PipesSubprocessClient` (a single local process without it);
rank 0 streams log lines and reports the final metrics (loss curve, throughput, memory,
held-out accuracy, checkpoint paths and hashes) back as this asset's metadata. The Dagster
step holds no model: a run killed mid-way resumes from its last checkpoint when materialized
again with the same config. All stage assets are in pool "gpu", so two never share a GPU.
"""

import json
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from healthgpt.data.tasks import STAGES
from healthgpt.model import get_preset
from healthgpt.settings import settings
from healthgpt.storage import output_path
from healthgpt.train import vq_assets as vq
from healthgpt.train import vq_codes
from healthgpt.train.config import preset_config
from healthgpt.train.run import current_final
from pipelines import production
from pipelines.automation import training_automation_condition
from pipelines.resources import DataLocations

GROUP = "training"
OWNERS = ["team:training"]
KINDS = {"pytorch"}
POOL = "gpu"
STAGE_SUBSETS = {stage: dg.AssetKey(["mixture", stage]) for stage in STAGES}


class FamilyOverride(dg.Config):
    """Per task family: LR per parameter group, global batch (None keeps the preset)."""

    lr: dict[str, float] | None = None
    global_batch: int | None = None


class StageRunConfig(dg.Config):
    """Run config of a training stage: every `healthgpt.train.config.StageConfig` field, None
    meaning "the preset's value", plus where and how to launch.
    """

    preset: str = ""  # m3 | l14 | cpu; "" = HEALTHGPT_TRAIN_PRESET (default cpu)
    model_preset: str | None = None
    subset: str | None = None
    families: dict[str, FamilyOverride] | None = None
    micro_batch: int | None = None
    epochs: float | None = None
    max_steps: int | None = None
    schedule: str | None = None
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    betas: list[float] | None = None
    grad_clip: float | None = None
    max_length: int | None = None
    dropout: float | None = None
    precision: str | None = None
    gradient_checkpointing: bool | None = None
    seed: int | None = None
    eval_samples: int | None = None
    max_new_tokens: int | None = None
    num_workers: int | None = None
    threads: int | None = None
    log_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = None
    # launch
    nproc_per_node: int = 1
    device: str = ""  # "" = cuda when available, else cpu
    mixture_dir: str = ""  # "" = <data>/mixture

    def overrides(self) -> dict[str, Any]:
        """The StageConfig overrides (launch fields and unset values left out)."""
        launch = {"nproc_per_node", "device", "mixture_dir"}
        data = self.model_dump(exclude_none=True)
        out = {k: v for k, v in data.items() if k not in launch}
        out["preset"] = self.preset or settings().train_preset
        if "families" in out:
            out["families"] = {
                name: {k: v for k, v in fam.items() if v is not None}
                for name, fam in out["families"].items()
            }
        return out


class VQTokenizerConfig(dg.Config):
    """Offline: train the small VQ tokenizer. Real: register a pretrained taming checkpoint."""

    pretrained_checkpoint: str = ""  # path of a taming VQGAN .ckpt; "" = train the small one
    pretrained_yaml: str = ""  # its model.yaml
    # Whose VQ shape the small tokenizer takes: "" = the model of the training preset.
    preset: str = ""  # m3 | l14 | cpu; "" = HEALTHGPT_TRAIN_PRESET (default cpu)
    model_preset: str = ""
    steps: int = 110  # reconstruction MSE 0.057 at 100 steps, 0.053 at 130: past the knee
    max_images: int = 2048
    mixture_dir: str = ""


def trained_model_preset(preset: str, model_preset: str | None) -> str:
    """The model preset the stages train, as they resolve it: `model_preset` when set, else
    the model of the training preset (`preset`, or HEALTHGPT_TRAIN_PRESET when blank)."""
    if model_preset:
        return model_preset
    return preset_config("stage3", preset or settings().train_preset).model_preset


def _mixture_dir(locations: DataLocations, configured: str) -> Path:
    return output_path(configured) if configured else locations.mixture_dir()


def checkpoints_dir(locations: DataLocations, name: str) -> Path:
    return locations.output_dir() / "checkpoints" / name


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    kinds=KINDS,
    deps=[STAGE_SUBSETS["stage1"], STAGE_SUBSETS["stage3"]],
    description="VQ image tokenizer whose codes extend the vocabulary: the small one trained "
    "offline on the mixture's generation images, or a pretrained taming VQGAN registered by path.",
)
def vq_tokenizer(
    context: dg.AssetExecutionContext, config: VQTokenizerConfig, locations: DataLocations
) -> dg.MaterializeResult:
    out = checkpoints_dir(locations, "vq_tokenizer")
    if config.pretrained_checkpoint:
        result = vq.register_pretrained_vq(
            Path(config.pretrained_checkpoint), Path(config.pretrained_yaml), out
        )
    else:
        mixture = _mixture_dir(locations, config.mixture_dir)
        result = vq.train_small_vq(
            mixture,
            out,
            steps=config.steps,
            limit=config.max_images,
            model_preset=trained_model_preset(config.preset, config.model_preset),
        )
    context.log.info(f"VQ tokenizer in {out}: {result.info}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "sha256": result.info["sha256"],
            "kind": result.info["kind"],
            "info": dg.MetadataValue.json(result.info),
        }
    )


class VQCodesConfig(dg.Config):
    """Where the mixture is ("" = <data>/mixture), the device to encode on, and the presets
    the stages train (the model's preprocessing decides how images are resized for their VQ
    codes: left blank, the same as the stages', so they find their codes)."""

    mixture_dir: str = ""
    device: str = ""  # "" = cuda when available, else cpu
    preset: str = ""  # m3 | l14 | cpu; "" = HEALTHGPT_TRAIN_PRESET (default cpu)
    model_preset: str = ""  # "" = the model of the training preset


@dg.asset(
    name="vq_codes",
    group_name=GROUP,
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    kinds=KINDS,
    deps=[*STAGE_SUBSETS.values(), "vq_tokenizer"],
    pool=POOL,
    description="VQ codes of every generation target image of the stage subsets, each distinct "
    "image encoded once per tokenizer and model preset preprocessing (content-keyed Parquet "
    "chunks beside the mixture, resumable); the stages read them instead of encoding at start.",
)
def vq_codes_asset(
    context: dg.AssetExecutionContext, config: VQCodesConfig, locations: DataLocations
) -> dg.MaterializeResult:
    report = vq_codes.compute(
        _mixture_dir(locations, config.mixture_dir),
        checkpoints_dir(locations, "vq_tokenizer"),
        device=config.device or None,
        log=context.log.info,
        vq_preprocess=get_preset(
            trained_model_preset(config.preset, config.model_preset)
        ).vq_preprocess,
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(report.store),
            "images": report.images,
            "images_encoded": report.images_encoded,
            "samples": report.samples,
            "tokenizer_sha256": report.tokenizer_sha256,
            "report": dg.MetadataValue.json(report.to_json()),
        },
        data_version=dg.DataVersion(report.data_version),
    )


def entry_args(
    stage: str,
    config: StageRunConfig,
    locations: DataLocations,
    init: Path | None,
) -> list[str]:
    """The arguments of `pipelines.train_entry` for one stage, local or in a pod."""
    args = [
        "--stage",
        stage,
        "--mixture",
        str(_mixture_dir(locations, config.mixture_dir)),
        "--out",
        str(checkpoints_dir(locations, stage)),
        "--vq",
        str(checkpoints_dir(locations, "vq_tokenizer")),
        "--overrides",
        json.dumps(config.overrides(), sort_keys=True),
    ]
    if init is not None:
        args += ["--init", str(init)]
    if config.device:
        args += ["--device", config.device]
    return args


def launch_training(
    context: dg.AssetExecutionContext,
    client: dg.PipesClient,
    args: list[str],
    nproc_per_node: int,
) -> dg.MaterializeResult:
    """Run `torchrun -m pipelines.train_entry <args>` through Pipes: a local process, or a GPU
    pod when `client` is a `PipesK8sClient` (the production profile). One local process
    starts without torchrun: its launcher would only add an interpreter and a rendezvous."""
    if isinstance(client, dg.PipesSubprocessClient):
        if nproc_per_node == 1:
            command = [sys.executable, "-m", production.TRAIN_ENTRY, *args]
        else:
            launcher = (sys.executable, "-m", "torch.distributed.run")
            command = production.torchrun_command(nproc_per_node, args, launcher)
        context.log.info("launching: " + " ".join(command))
        invocation = client.run(command=command, context=context, env={"PYTHONUNBUFFERED": "1"})
    else:
        pod = production.training_pod_for(args, nproc_per_node)
        context.log.info("launching pod: " + " ".join(pod["containers"][0]["command"]))
        invocation = client.run(context=context, base_pod_spec=pod)
    return invocation.get_materialize_result()


def _stage_factory(stage: str, previous: str | None, description: str) -> dg.AssetsDefinition:
    deps: list[Any] = [STAGE_SUBSETS[stage], "vq_tokenizer", "vq_codes"]
    if previous:
        deps.append(f"train_{previous}")

    @dg.asset(
        name=f"train_{stage}",
        group_name=GROUP,
        owners=OWNERS,
        automation_condition=training_automation_condition(),
        kinds=KINDS,
        deps=deps,
        pool=POOL,
        description=description,
    )
    def _train(
        context: dg.AssetExecutionContext,
        config: StageRunConfig,
        locations: DataLocations,
        training_pipes: dg.ResourceParam[dg.PipesClient],
    ) -> dg.MaterializeResult:
        init = current_final(checkpoints_dir(locations, previous)) if previous else None
        args = entry_args(stage, config, locations, init)
        return launch_training(context, training_pipes, args, config.nproc_per_node)

    return _train


train_stage1 = _stage_factory(
    "stage1",
    None,
    "Stage 1, multi-modal alignment: comprehension trains only its projector (LM and H-LoRA "
    "frozen); generation trains its projector and H-LoRA plugin on image-to-codes "
    "reconstruction, with the vocabulary extended by the VQ codes.",
)
train_stage2 = _stage_factory(
    "stage2",
    "stage1",
    "Stage 2, heterogeneous plugin fusion: all H-LoRA plugins frozen; only word embeddings and "
    "LM head train, on the small mixed fusion set at a constant LR.",
)
train_stage3 = _stage_factory(
    "stage3",
    "stage2",
    "Stage 3, visual instruction fine-tuning: H-LoRA plugins and projectors train on "
    "comprehension and generation instructions; embeddings and head frozen.",
)

training_assets = [vq_tokenizer, vq_codes_asset, train_stage1, train_stage2, train_stage3]
