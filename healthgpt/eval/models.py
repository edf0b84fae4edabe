"""Which model an evaluation runs: a training stage's checkpoint or the official weights.

The evaluation never builds or maps weights itself. It calls the model package:
`healthgpt.model.load_model` (presets), `load_trainable` (a stage's `save_trainable` file) and,
for the released HealthGPT files, the preset's `official_weights` (which `load_model` maps
with `load_official_weights`). The result is adapted to the `TextModel` / `ImageModel`
protocols by `HealthGPTText` / `HealthGPTImage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthgpt.eval.predict import HealthGPTImage, HealthGPTText, ImageModel, TextModel

# The release's file names (HealthGPT-M3: com_hlora_weights.bin, gen_hlora_weights.bin,
# fusion_layer_weights.bin; L14 adds a suffix, e.g. com_hlora_weights_phi4.bin).
OFFICIAL_FILES = {
    "comprehension": "com_hlora_weights*.bin",
    "generation": "gen_hlora_weights*.bin",
    "fusion": "fusion_layer_weights*.bin",
}
DEFAULT_CHECKPOINT_PRESET = "tiny"
DEFAULT_OFFICIAL_PRESET = "m3"
# A small preset's answer budget when none is given: short, so that the demo stays fast.
DEMO_MAX_NEW_TOKENS = 32


class ModelUnavailable(RuntimeError):
    """The requested model cannot be loaded here (missing files, or files that do not fit)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate. `official_dir` wins over `checkpoint`. An empty `preset` means the
    checkpoint's own (its `preset` metadata), or "m3" for official weights. No
    `max_new_tokens` means the model's own (`default_max_new_tokens`)."""

    preset: str = ""
    checkpoint: str | None = None
    official_dir: str | None = None
    max_new_tokens: int | None = None
    name: str = ""
    # The base LM (hub name or local path) in place of the preset's (official weights only).
    base_model: str | None = None
    # Load official files that leave expected tensors unfilled (named in the notes).
    allow_partial_weights: bool = False
    # Let a preset that needs a trained VQGAN (m3, l14) generate with a random one.
    vq_dry_run: bool = False
    # The VQGAN that decodes official-weight images (taming `last.ckpt` + `model.yaml`, or a
    # `save_vq` safetensors file), each with the sha256 recorded when it was registered.
    vq_path: str | None = None
    vq_sha256: str | None = None
    vq_yaml_path: str | None = None
    vq_yaml_sha256: str | None = None

    @property
    def label(self) -> str:
        """How reports name this model (`name` when given)."""
        if self.name:
            return self.name
        if self.official_dir:
            return f"official {Path(self.official_dir).name}"
        return f"checkpoint {Path(self.checkpoint).name}" if self.checkpoint else "no model"


def resolve_checkpoint(checkpoints_root: Path, stage: str) -> Path | None:
    """A training stage's newest weights under `<data>/checkpoints/<stage>/`, if any.

    The stage's `CURRENT.json` (its finished run's final directory) wins; else the highest
    `ckpt-<step>/`; else the directory itself when it holds safetensors files.
    """
    directory = Path(checkpoints_root) / stage
    if not directory.is_dir():
        return None
    current = directory / "CURRENT.json"
    if current.is_file():
        return Path(json.loads(current.read_text())["final"])
    steps = [p for p in directory.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit()]
    if steps:
        return max(steps, key=lambda p: int(p.name[5:]))
    return directory if any(directory.glob("*.safetensors")) else None


def checkpoint_file(path: str | Path) -> Path:
    """The safetensors file of a checkpoint path (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = [path / "model.safetensors"] + sorted(path.glob("*.safetensors"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelUnavailable(f"no safetensors checkpoint at {path}")


def checkpoint_metadata(path: Path) -> dict[str, str]:
    """The metadata a `save_trainable` file was written with (preset, VQ tokenizer path...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def official_files(directory: str | Path) -> dict[str, str]:
    """family -> file of the official release found in `directory` (at least one)."""
    directory = Path(directory)
    found = {}
    for family, pattern in OFFICIAL_FILES.items():
        matches = sorted(directory.glob(pattern))
        if matches:
            found[family] = str(matches[0])
    if not found:
        wanted = ", ".join(OFFICIAL_FILES.values())
        raise ModelUnavailable(f"no official HealthGPT weights ({wanted}) in {directory}")
    return found


def evaluated_checkpoint(spec: ModelSpec) -> str | None:
    """The pipeline checkpoint file `spec` loads (None for official weights), as the
    evaluation records it in `scores.json` and the model card looks it up."""
    if spec.official_dir or not spec.checkpoint:
        return None
    return str(checkpoint_file(spec.checkpoint))


def load_healthgpt(spec: ModelSpec) -> tuple[Any, list[str]]:
    """The project's `HealthGPT` for `spec`, and notes on how its weights loaded."""
    from healthgpt.model import get_preset, load_model, load_trainable
    from healthgpt.model.presets import OfficialWeights
    from healthgpt.model.vq import CheckpointRefused
    from healthgpt.model.weights import IncompleteWeights

    if spec.official_dir:
        config = get_preset(spec.preset or DEFAULT_OFFICIAL_PRESET)
        config.official_weights = OfficialWeights(**official_files(spec.official_dir))
        if spec.base_model:
            config.lm.name_or_path = spec.base_model
        if spec.vq_path:
            config.vq.ckpt_path, config.vq.ckpt_sha256 = spec.vq_path, spec.vq_sha256
            config.vq.yaml_path, config.vq.yaml_sha256 = spec.vq_yaml_path, spec.vq_yaml_sha256
        try:
            model = load_model(
                config, allow_partial=spec.allow_partial_weights, vq_dry_run=spec.vq_dry_run
            )
        except (IncompleteWeights, CheckpointRefused) as exc:
            raise ModelUnavailable(str(exc)) from exc
        reports = getattr(model, "load_reports", {})
        notes = [f"official {k} weights: {r.summary()}" for k, r in reports.items() if k != "vq"]
        return model, [*notes, vq_note(model)]
    if not spec.checkpoint:
        raise ModelUnavailable(
            "no model to evaluate: no training checkpoint was found and no official weights "
            "directory was given (materialize train_stage3 or set official_weights_dir)"
        )
    file = checkpoint_file(spec.checkpoint)
    metadata = checkpoint_metadata(file)
    preset = spec.preset or metadata.get("preset") or DEFAULT_CHECKPOINT_PRESET
    config = get_preset(preset)
    # The VQ tokenizer the stage trained with decodes the generated codes.
    if metadata.get("vq_path") and Path(metadata["vq_path"]).exists():
        config.vq.ckpt_path = metadata["vq_path"]
        config.vq.ckpt_sha256 = metadata.get("vq_sha256") or None  # verified on load
    try:
        model = load_model(config, vq_dry_run=spec.vq_dry_run)
    except CheckpointRefused as exc:  # its VQ tokenizer changed since the stage recorded it
        raise ModelUnavailable(str(exc)) from exc
    try:
        report = load_trainable(model, file)
    except (ValueError, KeyError) as exc:
        raise ModelUnavailable(f"{file} does not load into preset {preset!r}: {exc}") from exc
    return model, [f"checkpoint {file} into preset {preset!r}: {report.summary()}", vq_note(model)]


VQ_NOTE = "VQ weights: "


def vq_note(model: Any) -> str:
    """How the evaluation metadata names the VQ weights: path and sha256, or "random (dry
    run)"."""
    return f"{VQ_NOTE}{model.vq_weights}"


def default_max_new_tokens(model: Any) -> int:
    """The answer budget when none is given: a preset run as the official inference is
    (m3, l14: `prompt_tokenization="official"`) gets com_infer.py's `COM_MAX_NEW_TOKENS`;
    the small presets `DEMO_MAX_NEW_TOKENS`."""
    from healthgpt.model.healthgpt import COM_MAX_NEW_TOKENS

    official = getattr(model.config, "prompt_tokenization", "") == "official"
    return COM_MAX_NEW_TOKENS if official else DEMO_MAX_NEW_TOKENS


def text_model(spec: ModelSpec) -> TextModel:
    model, notes = load_healthgpt(spec)
    budget = spec.max_new_tokens or default_max_new_tokens(model)
    return HealthGPTText(
        model, max_new_tokens=budget, notes=notes, checkpoint=evaluated_checkpoint(spec)
    )


def image_model(spec: ModelSpec) -> ImageModel:
    """The model for image generation; refused up front when its preset needs a trained
    VQGAN and has a random one (unless `spec.vq_dry_run`)."""
    from healthgpt.model.healthgpt import VQNotTrained

    model, notes = load_healthgpt(spec)
    try:
        model.check_vq_ready()
    except VQNotTrained as exc:
        raise ModelUnavailable(str(exc)) from exc
    return HealthGPTImage(model, notes=notes, checkpoint=evaluated_checkpoint(spec))
