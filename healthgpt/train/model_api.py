"""The one place where training meets the model: build it, group its parameters, turn rows
into tensors, compute the loss, answer a question greedily.

The model is `healthgpt.model`'s `HealthGPT` (built by `load_model` from a named preset).
Everything else in `healthgpt.train` talks to a `ModelBundle` and never to model internals.

Generation samples carry `<target_image>` in their answer; the answer the model learns is the
VQ code text of the target image (`<start_index><idx_..>...<end_index>`). The codes come from
the `vq_codes` store (`healthgpt.train.vq_codes`, computed once per mixture, tokenizer and
the preset's `vq_preprocess`) or, when it is absent, are encoded in the training process
before the loaders start (`add_target_codes`); either way DataLoader workers only look them up
by sample id and never run the VQ encoder. Both resize an image as the preset's inference does
(`HealthGPT.image_to_codes`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from healthgpt.data.decode.imaging import decode_rgb
from healthgpt.data.tasks import IMAGE_TOKEN, TARGET_IMAGE_TOKEN
from healthgpt.model import (
    COMPREHENSION,
    GENERATION,
    HealthGPT,
    ModelConfig,
    codes_to_text,
    get_preset,
    images_to_tensor,
    load_model,
    load_trainable,
    save_trainable,
)
from healthgpt.model.healthgpt import HealthGPTOutput
from healthgpt.model.hlora import plugin_parameters
from healthgpt.model.prompt import ANSWER_CUT, ConversationFormatter, Fit, SampleDropped
from healthgpt.model.vision import ClipImageProcessor
from healthgpt.model.vq import VQTokenizer, build_vq_tokenizer
from healthgpt.train import config as C

# Columns the workers read: everything else (lineage, subject) stays on disk.
COLUMNS = ["id", "task", "task_family", "conversations", "image", "answer_type", "meta"]
# Columns a generation sample's target image is read from (see `target_image_bytes`).
TARGET_COLUMNS = ["id", "task_family", "target_image"]
TARGET_PLACEHOLDER = TARGET_IMAGE_TOKEN
IMAGE_PLACEHOLDER = IMAGE_TOKEN
VQ_FILE = "vq.safetensors"
VQ_INFO = "vq.json"
# A generation sample's answer is its target image: a cut answer is a cut image.
TARGET_IMAGE_CUT = "target_image_cut"


def _bytes(value: dict[str, Any] | None) -> bytes | None:
    return (value or {}).get("bytes")


def target_image_bytes(row: dict[str, Any]) -> bytes:
    """The encoded target image of a generation row (read with `TARGET_COLUMNS`): the one
    place that knows how the mixture stores it."""
    data = _bytes(row.get("target_image"))
    if data is None:
        raise ValueError(f"generation sample {row.get('id')} has no target image")
    return data


@torch.no_grad()
def encode_images(vq: VQTokenizer, images: list[bytes], vq_preprocess: str) -> torch.Tensor:
    """VQ codes [N, h, w] (on the CPU) of encoded images, as the generation targets use them.

    `vq_preprocess` is the model preset's (`ModelConfig.vq_preprocess`): targets must be made
    the way the model makes codes at inference, stretched for the released weights' presets
    and padded to square for the ones this pipeline trains from scratch."""
    pixels = images_to_tensor(
        [decode_rgb(data) for data in images], vq.config.resolution, vq_preprocess
    )
    device = next(vq.parameters()).device
    return vq.encode(pixels.to(device)).cpu()


def image_sha256(data: bytes) -> str:
    """The content key of an image in the `vq_codes` store."""
    return hashlib.sha256(data).hexdigest()


class SampleEncoder:
    """Row -> one formatted sample, run inside DataLoader workers.

    Picklable and model-free: the model's conversation formatter (a tokenizer and a few
    strings), its CLIP image processor, and the generation targets' code text by sample id.
    """

    def __init__(
        self,
        formatter: ConversationFormatter,
        image_processor: ClipImageProcessor,
        target_codes: dict[str, str],
    ) -> None:
        self.formatter, self.image_processor = formatter, image_processor
        self.target_codes = target_codes

    def turns(self, row: dict[str, Any]) -> list[dict[str, str]]:
        """The row's conversation as the model learns it (target images as VQ code text)."""
        turns = row["conversations"]
        if row["task_family"] == GENERATION:
            codes = self.target_codes.get(row["id"])
            if codes is None:
                raise KeyError(f"generation sample {row['id']} has no precomputed target codes")
            turns = [
                {**t, "value": t["value"].replace(TARGET_PLACEHOLDER, codes)}
                if t["from"] in ("gpt", "assistant")
                else t
                for t in turns
            ]
        return turns

    def fit(self, row: dict[str, Any]) -> Fit:
        """How the row fits max_length (see `healthgpt.model.prompt.Fit`); needs only the
        `id`, `task_family` and `conversations` columns."""
        fit = self.formatter.fit(self.turns(row))
        return replace(fit, reason=_reason(fit.reason, row["task_family"]))

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """One formatted sample; raises `SampleDropped` for a row that `fit` drops."""
        try:
            sample: dict[str, Any] = dict(self.formatter(self.turns(row)))
        except SampleDropped as dropped:
            reason = _reason(dropped.reason, row["task_family"])
            raise SampleDropped(reason, f"sample {row.get('id')}: {dropped}") from None
        image = decode_rgb(_bytes(row.get("image")))
        if image is not None:
            sample["pixel_values"] = self.image_processor.one(image)
        sample["task_family"] = row["task_family"]
        sample["task"] = row["task"]
        return sample


def _reason(reason: str | None, family: str) -> str | None:
    return TARGET_IMAGE_CUT if reason == ANSWER_CUT and family == GENERATION else reason


class Collator:
    """Right-pad samples into the batch `HealthGPT.forward` takes (picklable)."""

    def __init__(self, pad_token_id: int, image_size: int) -> None:
        self.pad_token_id, self.image_size = pad_token_id, image_size

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from healthgpt.model import collate

        batch = collate(samples, self.pad_token_id, self.image_size)
        batch["tasks"] = [s["task"] for s in samples]
        return batch


class ModelBundle:
    """The HealthGPT model and the functions the training loop needs around it."""

    def __init__(self, model: HealthGPT, vq_info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.vq_info = vq_info or {}
        self.columns = list(COLUMNS)
        self.target_codes: dict[str, str] = {}
        self.images_encoded = 0  # target images this process ran through the VQ encoder

    @property
    def preset(self) -> str:
        return self.model.config.name

    @property
    def vq_preprocess(self) -> str:
        """How the preset resizes an image for VQ codes (part of the `vq_codes` store key)."""
        return self.model.config.vq_preprocess

    # -- parameters -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Group name (see `config.GROUPS`) -> {qualified name: parameter}."""
        names = {id(p): n for n, p in self.model.named_parameters()}

        def named(params: Iterable[nn.Parameter]) -> dict[str, nn.Parameter]:
            return {names[id(p)]: p for p in params}

        model, lm = self.model, self.model.lm
        return {
            C.COMP_PROJECTOR: named(model.projectors[COMPREHENSION].parameters()),
            C.GEN_PROJECTOR: named(model.projectors[GENERATION].parameters()),
            C.HLORA_COMP: named(plugin_parameters(lm, COMPREHENSION)),
            C.HLORA_GEN: named(plugin_parameters(lm, GENERATION)),
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

    def save_model(self, path: Path, metadata: dict[str, str] | None = None) -> None:
        """The stage's weights as a `save_trainable` file (what evaluation loads)."""
        meta = {"vq_sha256": self.vq_info.get("sha256", "")}
        if self.vq_info.get("path"):
            meta["vq_path"] = str(self.vq_info["path"])
        save_trainable(self.model, path, metadata={**meta, **(metadata or {})})

    def load_model_file(self, path: Path) -> None:
        """Load a previous stage's `save_trainable` file (strict: every tensor must map)."""
        load_trainable(self.model, path, strict=True)

    def base_fingerprint(self) -> str:
        """sha256 over samples of the frozen base weights: a stage's init must share its base."""
        grouped = {id(p) for p in self.group_state().values()}
        digest = hashlib.sha256()
        for name, param in self.model.named_parameters():
            if id(param) not in grouped:
                flat = param.detach().float().flatten().cpu()
                digest.update(name.encode())
                digest.update(torch.cat([flat[:64], flat[-64:]]).numpy().tobytes())
        return digest.hexdigest()

    # -- data -------------------------------------------------------------------------------
    def encoder(self) -> SampleEncoder:
        return SampleEncoder(self.model.formatter, self.model.image_processor, self.target_codes)

    def collator(self) -> Collator:
        return Collator(self.model.tokenizer.pad_token_id, self.model.vision.image_size)

    def set_target_codes(self, codes: dict[str, torch.Tensor]) -> None:
        """Take precomputed code grids by sample id (the `vq_codes` store) as code text."""
        newlines = self.model.config.image_newlines
        for sample_id, grid in codes.items():
            self.target_codes[sample_id] = codes_to_text(grid, newlines=newlines)

    @torch.no_grad()
    def add_target_codes(self, rows: Iterable[dict[str, Any]], batch_size: int = 32) -> int:
        """VQ code text of the generation rows' target images, by sample id; returns how many
        images were encoded (rows already known are skipped, an image shared by several rows
        is encoded once). Counted in `images_encoded`."""
        pending: dict[str, list[str]] = {}  # image sha256 -> sample ids
        datas: dict[str, bytes] = {}
        done: dict[str, str] = {}  # image sha256 -> code text, for images seen again
        encoded = 0

        def flush() -> None:
            nonlocal encoded
            keys = list(pending)
            codes = encode_images(self.model.vq, [datas[k] for k in keys], self.vq_preprocess)
            for key, grid in zip(keys, codes, strict=True):
                done[key] = codes_to_text(grid, newlines=self.model.config.image_newlines)
                for sample_id in pending[key]:
                    self.target_codes[sample_id] = done[key]
            encoded += len(keys)
            pending.clear()
            datas.clear()

        for row in rows:
            if row.get("task_family") != GENERATION or row["id"] in self.target_codes:
                continue
            data = target_image_bytes(row)
            key = image_sha256(data)
            if key in done:
                self.target_codes[row["id"]] = done[key]
                continue
            datas[key] = data
            pending.setdefault(key, []).append(row["id"])
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
        self.images_encoded += encoded
        return encoded

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Move a batch's tensors to `device`."""
        return {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }

    # -- model calls ------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: dict[str, Any]) -> HealthGPTOutput:
        """The model's output for a batch (`model` may be the DDP-wrapped bundle model); the
        batch may carry `num_items_in_batch` (see `HealthGPT`)."""
        return model(batch)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean answer-token loss of the batch (`model` may be the DDP-wrapped bundle model)."""
        return model(batch).loss

    def row_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean answer-token loss of each sample of a (prepared) batch, [B]."""
        return self.model.row_losses(batch)

    @torch.no_grad()
    def answers(
        self, rows: list[dict[str, Any]], max_new_tokens: int, device: torch.device
    ) -> list[str]:
        """Greedy answers of the comprehension plugin to the rows' first questions, decoded
        together."""
        images, questions = [], []
        for row in rows:
            question = row["conversations"][0]["value"]
            image = decode_rgb(_bytes(row.get("image")))
            if image is not None:
                question = question.replace(IMAGE_PLACEHOLDER + "\n", "", 1)
                question = question.replace(IMAGE_PLACEHOLDER, "", 1).strip()
            images.append(image)
            questions.append(question)
        return self.model.generate_text_batch(images, questions, max_new_tokens=max_new_tokens)


# --- building ------------------------------------------------------------------------------


def read_vq_info(vq_dir: Path | None) -> dict[str, Any]:
    if vq_dir is None or not (Path(vq_dir) / VQ_INFO).is_file():
        return {}
    info = json.loads((Path(vq_dir) / VQ_INFO).read_text())
    if info.get("kind") == "small":
        info["path"] = str((Path(vq_dir) / VQ_FILE).absolute())
    return info


def model_config(model_preset: str, max_length: int, dropout: float, vq_dir: Path | None):
    """The preset's `ModelConfig` with the stage's max length, plugin dropout and VQ weights.

    The preset's own seed is kept: the randomly initialized parts (the tiny LM, a random
    CLIP) must be the ones evaluation rebuilds from the preset name alone.
    """
    config: ModelConfig = get_preset(model_preset)
    config.max_length = max_length
    config.plugins = {f: replace(p, dropout=dropout) for f, p in config.plugins.items()}
    info = read_vq_info(vq_dir)
    if info.get("kind") == "small":
        config.vq = replace(config.vq, ckpt_path=info["path"], ckpt_sha256=info.get("sha256"))
    elif info.get("kind") == "taming":
        config.vq = replace(
            config.vq,
            ckpt_path=info["path"],
            yaml_path=info.get("yaml"),
            ckpt_sha256=info.get("sha256"),
            yaml_sha256=info.get("yaml_sha256"),
        )
    elif info:
        raise ValueError(f"{vq_dir}: unknown VQ kind {info.get('kind')!r}")
    return config, info


def load_vq_tokenizer(vq_dir: Path) -> tuple[VQTokenizer, str]:
    """The VQ tokenizer a `vq_tokenizer` directory records (sha256 verified) and that sha256,
    without the language model: what the `vq_codes` asset encodes with."""
    info = read_vq_info(vq_dir)
    if not info:
        raise FileNotFoundError(f"{vq_dir} has no {VQ_INFO}: materialize vq_tokenizer first")
    config, _ = model_config("tiny", 1, 0.0, vq_dir)  # the file's own VQ config wins
    vq, _ = build_vq_tokenizer(config.vq)
    return vq.eval().requires_grad_(False), info["sha256"]


def build_bundle(
    model_preset: str,
    max_length: int,
    dropout: float,
    seed: int,
    vq_dir: Path | None,
    device: torch.device | str | None = "cpu",
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """The base model for a stage, identical in every process for the same preset.

    `seed` seeds the global RNG; the model's own random parts use the preset's seed (the
    training loop reseeds dropout per micro-batch). Parameters are fp32 unless `dtype` says
    otherwise; a bf16 `dtype` also makes the model autocast in bf16 (`HealthGPT.autocast`).
    """
    config, info = model_config(model_preset, max_length, dropout, vq_dir)
    torch.manual_seed(seed)
    model = load_model(config, device=device, dtype=dtype or torch.float32)
    return ModelBundle(model, info)
