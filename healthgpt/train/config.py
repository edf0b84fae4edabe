"""Typed configuration of the three training stages, with the paper's presets and a CPU one.

One dataclass per concern, plain Python (no Dagster), so the entry point, the tests and the
Dagster config all speak the same shape. Values follow HealthGPT's Tables 7 and 8 (AdamW,
weight decay 0, max length 2048). Overrides are nested dicts applied with `apply_overrides`,
which refuses unknown keys so a typo in run config fails loudly instead of being ignored.

Trainable parameters are named by *group*, a vocabulary the model adapter maps onto the
model's parameters (`healthgpt.train.model_api.parameter_groups`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from healthgpt.data.tasks import STAGE1, STAGE2, STAGE3, STAGES
from healthgpt.model.constants import COMPREHENSION, GENERATION, TASK_FAMILIES

PRESETS = ("m3", "l14", "cpu")

COMP_PROJECTOR = "comprehension_projector"
GEN_PROJECTOR = "generation_projector"
HLORA_COMP = "hlora_comprehension"
HLORA_GEN = "hlora_generation"
EMBEDDINGS = "embeddings"
LM_HEAD = "lm_head"
GROUPS = (COMP_PROJECTOR, GEN_PROJECTOR, HLORA_COMP, HLORA_GEN, EMBEDDINGS, LM_HEAD)
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("bf16", "fp32")

# Fields that change how a run is executed but not what it computes: excluded from the run
# key, so changing them does not throw away a checkpoint.
EXECUTION_FIELDS = (
    "num_workers",
    "threads",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
)


@dataclass
class FamilyConfig:
    """What one task family trains in a stage: parameter groups, their LRs, global batch."""

    lr: dict[str, float]
    global_batch: int

    @property
    def trainable(self) -> list[str]:
        return [group for group in GROUPS if group in self.lr]


@dataclass
class StageConfig:
    """One stage's complete recipe. `max_steps` > 0 caps the optimizer steps over `epochs`."""

    stage: str
    preset: str
    model_preset: str
    subset: str
    families: dict[str, FamilyConfig]
    micro_batch: int = 4
    epochs: float = 1.0
    max_steps: int = 0
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    max_length: int = 2048
    dropout: float = 0.05
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    seed: int = 0
    eval_samples: int = 64
    max_new_tokens: int = 8
    # execution only (see EXECUTION_FIELDS)
    num_workers: int = 2
    threads: int = 0  # torch's intra-op threads on a CPU (0: torch's default)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        self.families = {
            name: fam if isinstance(fam, FamilyConfig) else FamilyConfig(**fam)
            for name, fam in self.families.items()
        }
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage {self.stage!r} not in {STAGES}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} not in {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} not in {PRECISIONS}")
        if not self.families:
            raise ValueError("a stage trains at least one task family")
        for name, fam in self.families.items():
            if name not in TASK_FAMILIES:
                raise ValueError(f"unknown task family {name!r}; known: {TASK_FAMILIES}")
            unknown = set(fam.lr) - set(GROUPS)
            if unknown:
                raise ValueError(f"{name}: unknown parameter groups {sorted(unknown)}")
            if fam.global_batch <= 0 or fam.global_batch % self.micro_batch:
                raise ValueError(
                    f"{name}: global batch {fam.global_batch} must be a positive multiple of "
                    f"micro batch {self.micro_batch}"
                )
        if self.micro_batch <= 0 or self.max_length <= 0 or self.epochs <= 0:
            raise ValueError("micro_batch, max_length and epochs must be positive")

    def trainable_groups(self) -> dict[str, float]:
        """group -> LR over all families; a group shared by two families must agree on its LR."""
        merged: dict[str, float] = {}
        for name, fam in self.families.items():
            for group, lr in fam.lr.items():
                if merged.setdefault(group, lr) != lr:
                    raise ValueError(f"group {group} has two LRs ({merged[group]}, {lr}) ({name})")
        return merged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_key(self, **inputs: str) -> str:
        """sha256 of what determines the result: the config (less execution fields) and inputs."""
        payload = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        text = json.dumps({"config": payload, "inputs": inputs}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def apply_overrides(config: StageConfig, overrides: dict[str, Any] | None) -> StageConfig:
    """A copy of `config` with nested `overrides` applied; unknown keys raise `KeyError`.

    `families` merges per family and per LR group; `{"families": {"generation": None}}`
    drops a family (e.g. to run comprehension alone).
    """
    data = copy.deepcopy(config.to_dict())
    _merge(data, overrides or {}, path="")
    return StageConfig(**data)


def _merge(base: dict[str, Any], over: dict[str, Any], path: str) -> None:
    for key, value in over.items():
        where = f"{path}{key}"
        if path == "families." and value is None:
            base.pop(key, None)
            continue
        free = path == "families." or path.endswith(".lr.")
        if key not in base and not free:
            raise KeyError(f"unknown training config key {where!r}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, f"{where}.")
        else:
            base[key] = copy.deepcopy(value)


# --- presets -------------------------------------------------------------------------------


def _paper(stage: str, model_preset: str, preset: str) -> StageConfig:
    """Tables 7/8 of the paper. L14 differs from M3 only in stage 1's generation H-LoRA LR."""
    gen_hlora_lr = 1e-4 if preset == "l14" else 2e-4
    if stage == STAGE1:
        families = {
            COMPREHENSION: FamilyConfig(lr={COMP_PROJECTOR: 1e-3}, global_batch=256),
            GENERATION: FamilyConfig(
                lr={GEN_PROJECTOR: 2e-5, HLORA_GEN: gen_hlora_lr}, global_batch=64
            ),
        }
        return StageConfig(stage, preset, model_preset, STAGE1, families)
    if stage == STAGE2:
        lr = {EMBEDDINGS: 2e-4, LM_HEAD: 2e-4}
        families = {
            COMPREHENSION: FamilyConfig(lr=dict(lr), global_batch=32),
            GENERATION: FamilyConfig(lr=dict(lr), global_batch=32),
        }
        return StageConfig(
            stage, preset, model_preset, STAGE2, families, schedule="constant", warmup_ratio=0.0
        )
    families = {
        COMPREHENSION: FamilyConfig(lr={COMP_PROJECTOR: 2e-5, HLORA_COMP: 2e-4}, global_batch=128),
        GENERATION: FamilyConfig(lr={GEN_PROJECTOR: 2e-5, HLORA_GEN: 2e-4}, global_batch=64),
    }
    return StageConfig(stage, preset, model_preset, STAGE3, families)


def _cpu(stage: str) -> StageConfig:
    """The paper's recipe scaled to a 2-core CPU: tiny batches, a few hundred steps, LRs high
    enough that a tiny model learns in minutes. Same groups frozen and trained as the paper.
    """
    config = _paper(stage, "tiny", "cpu")
    lrs = {COMP_PROJECTOR: 2e-3, GEN_PROJECTOR: 1e-3, HLORA_COMP: 2e-3, HLORA_GEN: 2e-3}
    # A randomly initialized tiny LM's head spans too small a logit range to fit answers until
    # stage 2 moves it: its constant LR is high so 20 steps do.
    lrs.update({EMBEDDINGS: 1e-2, LM_HEAD: 1e-2})
    for fam in config.families.values():
        fam.lr = {group: lrs[group] for group in fam.lr}
        fam.global_batch = 8
    overrides: dict[str, Any] = {
        "micro_batch": 8,
        "max_length": 512,
        "precision": "fp32",
        "num_workers": 1,
        # The tiny model's ops are too small to split over cores: one thread computes as fast
        # and leaves the other core to the DataLoader worker instead of stalling on it.
        "threads": 1,
        "log_every": 5,
        "checkpoint_every": 50,
        "warmup_ratio": 0.05 if config.warmup_ratio else 0.0,
        "epochs": {STAGE1: 3.0, STAGE2: 2.0, STAGE3: 40.0}[stage],
        "max_steps": {STAGE1: 60, STAGE2: 40, STAGE3: 600}[stage],
        "eval_samples": 64,
    }
    return dataclasses.replace(config, **overrides)


def preset_config(stage: str, preset: str = "cpu") -> StageConfig:
    """The named preset of one stage: `m3` (Phi-3-mini), `l14` (Phi-4), `cpu` (tiny)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} not in {STAGES}")
    if preset == "cpu":
        return _cpu(stage)
    if preset in ("m3", "l14"):
        return _paper(stage, preset, preset)
    raise ValueError(f"preset {preset!r} not in {PRESETS}")


def stage_config(stage: str, overrides: dict[str, Any] | None = None) -> StageConfig:
    """Preset (chosen by `overrides["preset"]`, default cpu) with the overrides applied."""
    overrides = dict(overrides or {})
    preset = overrides.pop("preset", "cpu")
    return apply_overrides(preset_config(stage, preset), overrides)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(StageConfig))
__all__ = [
    "FIELD_NAMES",
    "GROUPS",
    "PRESETS",
    "STAGES",
    "FamilyConfig",
    "StageConfig",
    "apply_overrides",
    "preset_config",
    "stage_config",
]
