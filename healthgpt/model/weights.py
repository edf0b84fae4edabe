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
name). The fusion file's tables become the generation family's own rows (the official
comprehension model never loads it; see :mod:`healthgpt.model.family_rows`). Every key that
does not land on a model tensor is reported with the reason, and every expected key a file
did not fill is listed (:func:`load_official_release` refuses such files unless told).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from healthgpt.model.constants import COMPREHENSION, GENERATION
from healthgpt.model.family_rows import set_family_rows, unusable_weights
from healthgpt.model.hlora import hlora_layers
from healthgpt.model.load_report import LoadReport
from healthgpt.model.vq import CheckpointRefused
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
    try:
        handle = safe_open(str(path), framework="pt")
    except SafetensorError as exc:  # a pickle or anything else: parsed as safetensors only
        raise CheckpointRefused(
            f"{Path(path).name}: not a safetensors checkpoint ({exc}); nothing in it was run"
        ) from None
    with handle as f:
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


FUSION = "fusion"
EMBED_KEY = "model.embed_tokens.weight"
HEAD_KEY = "lm_head.weight"


class IncompleteWeights(ValueError):
    """Official weight files that leave expected model tensors unfilled (listed in ``missing``)."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


def read_official_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A released ``.bin`` state dict, read with ``torch.load(weights_only=True)``: a pickle
    that names anything but tensors (a ``__reduce__`` calling ``os.system``) is refused unrun;
    a file torch cannot read (truncated, not a torch file) is refused with its name."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointRefused(
            f"{Path(path).name}: refused: it is not a plain state dict of tensors "
            f"({str(exc).splitlines()[0]}); nothing in it was run"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointRefused(
            f"{Path(path).name}: refused: not a readable PyTorch file (truncated or damaged?): "
            f"{first}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointRefused(f"{Path(path).name}: holds no state dict of tensors")
    return dict(state)


def expected_official_keys(model: HealthGPT, kind: str) -> list[str]:
    """The official keys a file of ``kind`` (a family, or ``"fusion"``) must hold to fill its
    part of ``model``: every plugin tensor of every adapted layer and the projector for a
    family file; the embedding and (unless tied) the LM head for the fusion file."""
    if kind == FUSION:
        keys = [OFFICIAL_PREFIX + EMBED_KEY]
        if not model.tied_embeddings:
            keys.append(OFFICIAL_PREFIX + HEAD_KEY)
        return keys
    keys = []
    for name, layer in hlora_layers(model.lm):
        if kind not in layer.plugins:
            raise KeyError(f"no plugin {kind!r}; have {sorted(layer.plugins)}")
        keys += [f"{OFFICIAL_PREFIX}{name}.{param}" for param in _LORA_PARAMS]
    keys += [
        f"{OFFICIAL_PREFIX}model.mm_projector.{name}"
        for name, _ in model.projectors[kind].named_parameters()
    ]
    return keys


def load_official_weights(
    model: HealthGPT,
    source: str | Path | Mapping[str, torch.Tensor],
    family: str | None = None,
    *,
    fusion_family: str = GENERATION,
) -> LoadReport:
    """Map one official HealthGPT state dict (a ``.bin`` path or the dict) onto ``model``.

    ``family`` names the plugin/projector a plugin file holds; for a path it defaults to what
    the file name says (``com_*`` comprehension, ``gen_*`` generation). The fusion file's
    embedding and LM head become ``fusion_family``'s own rows (:mod:`family_rows`): the
    official comprehension model never loads that file, so the other families keep the
    base rows. ``report.missing`` lists the expected keys (:func:`expected_official_keys`)
    the file did not fill; this function does not raise for them (see
    :func:`load_official_release`).
    """
    where = "state dict"
    if not isinstance(source, Mapping):
        where = Path(source).name
        family = family or family_from_filename(source)
        source = read_official_file(source)
    params = dict(model.named_parameters())
    parts = part_names(model)
    report = LoadReport()
    fused: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        target, reason = official_target(key, family, model)
        unusable = unusable_weights(value) if target is not None else None
        if unusable:
            raise CheckpointRefused(f"{where}: refused: {key} {unusable}")
        if target is None:
            report.unmapped[key] = reason
        elif target in (f"lm.{EMBED_KEY}", f"lm.{HEAD_KEY}"):
            shape = tuple(model.lm.get_input_embeddings().weight.shape)
            if tuple(value.shape) != shape:
                report.unmapped[key] = f"shape {tuple(value.shape)} != model {shape}"
                continue
            fused[target] = value
            report.loaded.append(key)
        elif target not in parts:
            report.unmapped[key] = f"maps to {target}, which is not a trainable tensor here"
        else:
            _copy(params[target], value, key, report)
    if fused:
        embed = fused.get(f"lm.{EMBED_KEY}", model.lm.get_input_embeddings().weight)
        head = fused.get(f"lm.{HEAD_KEY}", model.lm.get_output_embeddings().weight)
        if model.tied_embeddings:  # one table for both
            head = embed
        report.rows_kept = set_family_rows(model.lm, fusion_family, embed.detach(), head.detach())
    kind = FUSION if fused else family
    if kind is not None:
        loaded = set(report.loaded)
        report.missing = [k for k in expected_official_keys(model, kind) if k not in loaded]
    return report


def load_official_release(
    model: HealthGPT,
    files: Mapping[str, str | Path | None],
    *,
    allow_partial: bool = False,
) -> dict[str, LoadReport]:
    """Load the released files as the official scripts do, into one model.

    ``files``: ``comprehension`` (``com_hlora_weights*.bin``), ``generation``
    (``gen_hlora_weights*.bin``), ``fusion`` (``fusion_layer_weights*.bin``, the generation
    family's embedding and LM head); absent ones are skipped. Raises
    :class:`IncompleteWeights` naming every expected key a given file did not fill (each
    plugin tensor of each adapted layer, each projector tensor, the fused rows), unless
    ``allow_partial``."""
    reports: dict[str, LoadReport] = {}
    for kind in (COMPREHENSION, GENERATION, FUSION):
        path = files.get(kind)
        if not path:
            continue
        family = None if kind == FUSION else kind
        report = load_official_weights(model, path, family)
        if kind == FUSION and not report.loaded:
            report.missing = expected_official_keys(model, FUSION)
        report.source = f"{path} (sha256 {file_sha256(Path(path))})"
        reports[kind] = report
    missing = {kind: r.missing for kind, r in reports.items() if r.missing}
    if missing and not allow_partial:
        lines = [
            f"{kind} ({reports[kind].source}): {len(keys)} expected keys missing: "
            + ", ".join(keys)
            for kind, keys in missing.items()
        ]
        raise IncompleteWeights(
            "official weights incomplete (pass allow_partial to load them anyway):\n"
            + "\n".join(lines),
            [k for keys in missing.values() for k in keys],
        )
    return reports


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
    if k == "lm_head.weight" and model.tied_embeddings:
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
