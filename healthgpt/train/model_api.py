"""The one place where training meets the model: build it, group its parameters, turn rows
into tensors, compute the loss, answer a question greedily.

Everything else in `healthgpt.train` talks to a `ModelBundle` and never to model internals,
so switching from the interim stand-in to `healthgpt.model`'s `HealthGPT` touches this module
only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from healthgpt.model.constants import COMPREHENSION, GENERATION, IGNORE_INDEX
from healthgpt.model.hlora import plugin_parameters
from healthgpt.train import config as C
from healthgpt.train.interim_model import (
    EOS,
    PAD,
    ByteFormatter,
    InterimHealthGPT,
    TinySpec,
    TinyVQ,
    decode_png,
)

# Columns the workers read: everything else (ids, lineage, subject) stays on disk.
COLUMNS = ["task", "task_family", "conversations", "image", "target_image", "answer_type", "meta"]
VQ_FILE = "vq.safetensors"
VQ_INFO = "vq.json"


class SampleEncoder:
    """Row -> tensors for one sample, run inside DataLoader workers (picklable, model-free)."""

    def __init__(self, formatter: ByteFormatter, image_size: int) -> None:
        self.formatter, self.image_size = formatter, image_size

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        sample = self.formatter(row["conversations"], row["task_family"])
        image = (row.get("image") or {}).get("bytes")
        target = (row.get("target_image") or {}).get("bytes")
        sample["pixels"] = decode_png(image, self.image_size)
        if row["task_family"] == GENERATION:
            sample["target_pixels"] = decode_png(target, self.image_size)
        sample["task"] = row["task"]
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Right-pad a list of samples of one family into a batch."""
    length = max(len(s["input_ids"]) for s in samples)

    def pad(key: str, value: int | bool) -> torch.Tensor:
        out = torch.full((len(samples), length), value, dtype=samples[0][key].dtype)
        for i, s in enumerate(samples):
            out[i, : len(s[key])] = s[key]
        return out

    batch = {
        "input_ids": pad("input_ids", PAD),
        "labels": pad("labels", IGNORE_INDEX),
        "code_slots": pad("code_slots", False),
        "attention_mask": pad("input_ids", -1) != -1,
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "tasks": [s["task"] for s in samples],
    }
    if "target_pixels" in samples[0]:
        batch["target_pixels"] = torch.stack([s["target_pixels"] for s in samples])
    return batch


class ModelBundle:
    """The model, its VQ tokenizer and the functions the training loop needs around them."""

    def __init__(self, model: InterimHealthGPT, vq: TinyVQ | None, max_length: int) -> None:
        self.model, self.vq, self.max_length = model, vq, max_length
        self.spec = model.spec
        self.formatter = ByteFormatter(self.spec, max_length)
        self.columns = list(COLUMNS)

    # -- parameters -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Group name (see `config.GROUPS`) -> {qualified name: parameter}."""
        names = {id(p): n for n, p in self.model.named_parameters()}

        def named(params) -> dict[str, nn.Parameter]:
            return {names[id(p)]: p for p in params}

        lm = self.model.lm
        return {
            C.COMP_PROJECTOR: named(self.model.projectors[COMPREHENSION].parameters()),
            C.GEN_PROJECTOR: named(self.model.projectors[GENERATION].parameters()),
            C.HLORA_COMP: named(plugin_parameters(self.model, COMPREHENSION)),
            C.HLORA_GEN: named(plugin_parameters(self.model, GENERATION)),
            C.EMBEDDINGS: named(lm.get_input_embeddings().parameters()),
            C.LM_HEAD: named(lm.get_output_embeddings().parameters()),
        }

    def group_state(self) -> dict[str, torch.Tensor]:
        """Every grouped tensor (what the stages change on top of the base model)."""
        return {n: p for group in self.parameter_groups().values() for n, p in group.items()}

    def load_group_state(self, tensors: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        unknown = set(tensors) - set(params)
        if unknown:
            raise KeyError(f"checkpoint has tensors the model lacks: {sorted(unknown)[:5]}")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)

    def base_fingerprint(self) -> str:
        """sha256 over samples of the frozen base weights: a stage's init must share its base."""
        grouped = {id(p) for p in self.group_state().values()}
        digest = hashlib.sha256()
        for name, param in self.model.named_parameters():
            if id(param) not in grouped:
                flat = param.detach().float().flatten()
                digest.update(name.encode())
                digest.update(torch.cat([flat[:64], flat[-64:]]).numpy().tobytes())
        return digest.hexdigest()

    # -- data -------------------------------------------------------------------------------
    def encoder(self) -> SampleEncoder:
        return SampleEncoder(self.formatter, self.spec.image_size)

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Move a batch to `device`; write the VQ codes of generation targets into their slots."""
        out = {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        if "target_pixels" in out:
            if self.vq is None:
                raise RuntimeError("generation batches need a VQ tokenizer (vq_dir)")
            codes = self.vq.encode(out["target_pixels"]) + self.code_offset
            slots = out["code_slots"]
            per_row = slots.sum(-1)
            keep = torch.arange(codes.shape[1], device=device)[None, :] < per_row[:, None]
            out["input_ids"] = out["input_ids"].masked_scatter(slots, codes[keep])
            out["labels"] = out["labels"].masked_scatter(slots, codes[keep])
        out["family"] = GENERATION if "target_pixels" in out else COMPREHENSION
        return out

    @property
    def code_offset(self) -> int:
        return self.spec.vocab - self.spec.codebook

    # -- model calls ------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixels=batch["pixels"],
            family=batch["family"],
            labels=batch["labels"],
        ).loss

    @torch.no_grad()
    def answer(self, row: dict[str, Any], max_new_tokens: int, device: torch.device) -> str:
        """Greedy answer to a row's first question (no KV cache: answers here are short)."""
        ids = self.formatter.prompt(row["conversations"]).to(device)[None]
        pixels = decode_png((row.get("image") or {}).get("bytes"), self.spec.image_size)
        pixels = pixels.to(device)[None]
        out: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixels=pixels,
                family=COMPREHENSION,
            ).logits[0, -1, : self.code_offset]
            token = int(logits.argmax())
            if token == EOS:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
        return self.formatter.decode(out)


# --- building ------------------------------------------------------------------------------


def model_spec(model_preset: str, dropout: float) -> TinySpec:
    if model_preset != "tiny":
        raise NotImplementedError(
            f"model preset {model_preset!r} needs healthgpt.model's load_model (not yet available "
            "to training); the interim stand-in provides only 'tiny'"
        )
    return TinySpec(dropout=dropout)


def build_bundle(
    model_preset: str, max_length: int, dropout: float, seed: int, vq_dir: Path | None
) -> ModelBundle:
    """The base model for a stage, identical in every process for the same preset and seed."""
    spec = model_spec(model_preset, dropout)
    torch.manual_seed(seed)
    model = InterimHealthGPT(spec)
    vq = load_vq(vq_dir, spec) if vq_dir else None
    return ModelBundle(model, vq, max_length)


def load_vq(vq_dir: Path, spec: TinySpec) -> TinyVQ:
    """The VQ tokenizer written by `healthgpt.train.vq` (frozen, eval mode)."""
    from safetensors.torch import load_file

    info = json.loads((Path(vq_dir) / VQ_INFO).read_text())
    if info.get("kind") != "tiny":
        raise NotImplementedError(f"VQ kind {info.get('kind')!r} needs healthgpt.model's VQ loader")
    vq = TinyVQ(spec)
    vq.load_state_dict(load_file(Path(vq_dir) / VQ_FILE))
    return vq.eval().requires_grad_(False)
