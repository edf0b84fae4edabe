"""Save/load the trainable parts, and map the official HealthGPT weights onto the model.

Trainable parts: ``plugins`` (every H-LoRA plugin), ``projectors`` (one per family) and
``embeddings`` (input embeddings + LM head, HealthGPT's "fusion" layers, which carry the
added image tokens). Files are safetensors, written atomically.

The official release has three ``torch.save``d state dicts of a peft-wrapped LLaVA model:

- ``com_hlora_weights.bin`` / ``gen_hlora_weights.bin``: per adapted linear
  ``base_model.model.model.layers.N.<module>.lora_{A,B,route}.weight`` ([r, d_in], [d_out, r],
  [k, d_in], torch's [out, in] layout) and the projector
  ``base_model.model.model.mm_projector.{0,2}.{weight,bias}``;
- ``fusion_layer_weights.bin``: ``base_model.model.model.embed_tokens.weight`` and
  ``base_model.model.lm_head.weight`` after the vocabulary resize.

Which family a plugin file holds is not in its keys; it comes from the caller (or the file
name). Every key that does not land on a trainable tensor is reported with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from healthgpt.model.constants import COMPREHENSION, GENERATION
from healthgpt.model.load_report import LoadReport
from healthgpt.storage import atomic_path, file_sha256

if TYPE_CHECKING:
    from healthgpt.model.healthgpt import HealthGPT

PARTS = ("plugins", "projectors", "embeddings")
OFFICIAL_PREFIX = "base_model.model."
_LORA_PARAMS = ("lora_A.weight", "lora_B.weight", "lora_route.weight")


@dataclass(frozen=True)
class SavedCheckpoint:
    path: Path
    num_bytes: int
    sha256: str
    num_tensors: int


def part_names(model: HealthGPT) -> dict[str, str]:
    """Parameter name -> part, for every parameter that belongs to a trainable part."""
    embedding_ids = {id(p) for p in model.embedding_parameters()}
    parts = {}
    for name, param in model.named_parameters():
        if ".plugins." in name:
            parts[name] = "plugins"
        elif name.startswith("projectors."):
            parts[name] = "projectors"
        elif id(param) in embedding_ids:
            parts[name] = "embeddings"
    return parts


def trainable_state_dict(model: HealthGPT, parts: Sequence[str] = PARTS) -> dict[str, torch.Tensor]:
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    params = dict(model.named_parameters())
    return {
        name: params[name].detach().contiguous()
        for name, part in part_names(model).items()
        if part in parts
    }


def save_trainable(
    model: HealthGPT,
    path: str | Path,
    parts: Sequence[str] = PARTS,
    metadata: Mapping[str, str] | None = None,
) -> SavedCheckpoint:
    """Write the chosen parts to ``path`` (safetensors, atomic rename); return size and hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.cpu() for k, v in trainable_state_dict(model, parts).items()}
    meta = {"format": "healthgpt-trainable", "preset": model.config.name, "parts": ",".join(parts)}
    meta.update(metadata or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        canonicalize_header(tmp)
    return SavedCheckpoint(path, path.stat().st_size, file_sha256(path), len(tensors))


def canonicalize_header(path: str | Path) -> None:
    """Rewrite a safetensors header with sorted keys, in place, so equal contents give equal
    bytes: safetensors writes its metadata in hash-map order, which changes from one call to
    the next. The header keeps its length (same keys, reordered; padded with spaces)."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        meta = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | dict(
            sorted(header.items())
        )
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # another JSON escaping than the writer's: leave the file as is
            return
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def load_trainable(model: HealthGPT, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a :func:`save_trainable` file; with ``strict``, raise unless every key maps and
    every tensor of the saved parts is present."""
    report = LoadReport()
    parts = part_names(model)
    params = dict(model.named_parameters())
    with safe_open(str(path), framework="pt") as f:
        saved_parts = (f.metadata() or {}).get("parts", ",".join(PARTS)).split(",")
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if key not in parts:
                report.unmapped[key] = "not a trainable tensor of this model"
                continue
            _copy(params[key], f.get_tensor(key), key, report)
    report.missing = sorted(
        n for n, p in parts.items() if p in saved_parts and n not in report.loaded
    )
    if strict and not report.ok:
        raise ValueError(f"{path}: {report.summary()}: {report.unmapped or report.missing}")
    return report


def family_from_filename(path: str | Path) -> str | None:
    name = Path(path).name
    if name.startswith("com"):
        return COMPREHENSION
    if name.startswith("gen"):
        return GENERATION
    return None


def load_official_weights(
    model: HealthGPT,
    source: str | Path | Mapping[str, torch.Tensor],
    family: str | None = None,
) -> LoadReport:
    """Map an official HealthGPT state dict (a ``.bin`` path or the dict) onto ``model``.

    ``family`` names the plugin/projector the file holds; for a path it defaults to what the
    file name says (``com_*`` comprehension, ``gen_*`` generation).
    """
    if not isinstance(source, Mapping):
        family = family or family_from_filename(source)
        source = torch.load(source, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    parts = part_names(model)
    report = LoadReport()
    for key, value in source.items():
        target, reason = official_target(key, family, model)
        if target is None:
            report.unmapped[key] = reason
        elif target not in parts:
            report.unmapped[key] = f"maps to {target}, which is not a trainable tensor here"
        else:
            _copy(params[target], value, key, report)
    return report


def official_target(key: str, family: str | None, model: HealthGPT) -> tuple[str | None, str]:
    """Our parameter name for an official key, or None and the reason."""
    k = key.removeprefix(OFFICIAL_PREFIX)
    for param in _LORA_PARAMS:
        if k.endswith("." + param):
            if family is None:
                return None, "H-LoRA key but the plugin family is unknown"
            return f"lm.{k[: -len(param) - 1]}.plugins.{family}.{param}", ""
    if ".mm_projector." in k:
        if family is None:
            return None, "projector key but the plugin family is unknown"
        return f"projectors.{family}.{k.split('.mm_projector.', 1)[1]}", ""
    if ".vision_tower." in k:
        return None, "vision tower weight (comes from the CLIP checkpoint)"
    if k == "lm_head.weight" and len(model.embedding_parameters()) == 1:
        return None, "lm_head is tied to embed_tokens in this model"
    if k in ("model.embed_tokens.weight", "lm_head.weight"):
        return f"lm.{k}", ""
    return None, "base-model weight, not a trainable part"


def _copy(param: torch.Tensor, value: torch.Tensor, key: str, report: LoadReport) -> None:
    if tuple(value.shape) != tuple(param.shape):
        report.unmapped[key] = f"shape {tuple(value.shape)} != model {tuple(param.shape)}"
        return
    with torch.no_grad():
        param.copy_(value.to(device=param.device, dtype=param.dtype))
    report.loaded.append(key)
