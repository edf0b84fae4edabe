"""The HealthGPT model: LM with H-LoRA plugins, HVP vision input, VQ image output."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PreTrainedModel

from healthgpt.model.constants import (
    COMPREHENSION,
    GENERATION,
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_ID,
)
from healthgpt.model.family_rows import family_row_modules
from healthgpt.model.hlora import (
    checkpoint_context,
    hlora_layers,
    plugin_parameters,
    route,
    set_active_plugin,
)
from healthgpt.model.image_tokens import (
    START,
    ImageCodeConstraint,
    ImageTokenVocab,
    codes_from_text,
    codes_to_text,
)
from healthgpt.model.load_report import LoadReport
from healthgpt.model.presets import ModelConfig
from healthgpt.model.prompt import PROMPT_STYLES, ConversationFormatter, collate
from healthgpt.model.tokenizer import TextTokenizer
from healthgpt.model.vision import ClipImageProcessor, HierarchicalVisionEncoder, build_projector
from healthgpt.model.vq import VQTokenizer, images_to_tensor, tensor_to_images

# Decoding limits of the official inference scripts (DCDmllm/HealthGPT llava/demo):
# com_infer.py `--max_new_tokens` default 1024; gen_infer.py default 1100 (a 32x32 code grid
# is 1024 tokens, plus room for the end marker and stray tokens).
COM_MAX_NEW_TOKENS = 1024
GEN_MAX_NEW_TOKENS = 1100
RANDOM_VQ = "random (dry run)"  # how reports name a VQ tokenizer without trained weights
IMAGE_DECODING = ("constrained", "official")


class VQNotTrained(RuntimeError):
    """A preset that needs a trained VQGAN was asked for images with a random one."""


@dataclass
class HealthGPTOutput:
    """``loss``: summed answer-token cross-entropy over ``num_items_in_batch`` (by default the
    batch's own answer tokens: the mean over them, whatever their family). ``loss_sum`` is the
    sum itself and ``answer_tokens`` the batch's count, for logging a token-weighted mean."""

    loss: torch.Tensor
    family_losses: dict[str, float]
    family_tokens: dict[str, int]
    loss_sum: float = 0.0
    answer_tokens: int = 0


class HealthGPT(nn.Module):
    """One module holding both task families; build it with :func:`load_model`.

    The batch for :meth:`forward` (see :meth:`collate`)::

        input_ids       [B, T] long, IMAGE_TOKEN_ID at the image's patch positions
        attention_mask  [B, T] (1 = token, 0 = right padding)
        labels          [B, T] long, IGNORE_INDEX except on answer tokens
        pixel_values    [B, 3, S, S] (CLIP-normalized; any value for samples without image)
        task_family     list of "comprehension" | "generation" (or one string for all)
        num_items_in_batch  optional: what the summed loss is divided by (default: this
                            batch's answer tokens). For gradient accumulation over a global
                            batch: its answer tokens over all micro-batches and ranks, divided
                            by the world size (DDP averages gradients over ranks)

    A mixed batch runs as one sub-batch per family, each through its own plugin (routed by
    :func:`healthgpt.model.hlora.route`, so gradient checkpointing recomputes with the same
    plugin), projector and HVP layer; the loss is the token-weighted mean over both.

    Precision: with ``autocast_dtype`` set (``load_model`` sets it for a bf16/fp16 model) every
    pass that runs the model, the training forward and generation alike, runs under autocast
    in that dtype, so a half-precision base with fp32 trainable (master) weights works in
    training, validation and generation without the caller doing anything.
    """

    def __init__(
        self,
        config: ModelConfig,
        lm: PreTrainedModel,
        tokenizer: TextTokenizer,
        vision: HierarchicalVisionEncoder,
        vq: VQTokenizer,
        image_vocab: ImageTokenVocab,
    ) -> None:
        super().__init__()
        if getattr(lm.config, "final_logit_softcapping", None) or getattr(
            lm.config, "logit_scale", None
        ):
            # _loss_sum applies the bare LM head to hidden states.
            raise NotImplementedError(f"{type(lm).__name__} post-processes its logits")
        self.config = config
        self.lm = lm
        self.vision = vision
        self.vq = vq
        hidden = lm.get_input_embeddings().embedding_dim
        self.projectors = nn.ModuleDict(
            {f: build_projector(vision.hidden_size, hidden) for f in config.plugins}
        )
        self.tokenizer = tokenizer
        self.image_vocab = image_vocab
        self.formatter = ConversationFormatter(
            tokenizer, PROMPT_STYLES[config.prompt], vision.num_patches, config.max_length
        )
        self.image_processor = ClipImageProcessor(vision.image_size)
        self.load_reports: dict[str, LoadReport] = {}  # official weights loaded by load_model
        self.vq_dry_run = False  # allow images from a random VQ for a preset that needs one
        self.autocast_dtype: torch.dtype | None = None  # see the class docstring

    def train(self, mode: bool = True) -> HealthGPT:
        """Train mode for the LM and projectors; the frozen vision tower and VQ stay in eval."""
        super().train(mode)
        self.vision.eval()
        self.vq.eval()
        return self

    # ----- plugins and trainable parts -----

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.config.plugins)

    def set_active_plugin(self, family: str | None) -> None:
        """Switch every H-LoRA layer (and the family rows) to ``family``'s plugin outside of
        any route (None: the bare base LM). Module state: prefer :meth:`active_plugin`, which
        the forward uses."""
        set_active_plugin(self.lm, family)
        for module in family_row_modules(self.lm):
            module.active_plugin = family

    def active_plugin(self, family: str | None) -> AbstractContextManager[None]:
        """Context manager: ``family``'s plugin inside the block (a checkpoint-safe route)."""
        if family is not None:
            layer = next((layer for _, layer in hlora_layers(self.lm)), None)
            if layer is not None and family not in layer.plugins:
                raise KeyError(f"no plugin {family!r}; have {sorted(layer.plugins)}")
        return route(family)

    def autocast(self) -> AbstractContextManager[None]:
        """Autocast in ``autocast_dtype`` on the model's device (nothing when it is None)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self._device.type, dtype=self.autocast_dtype)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Input embeddings and LM head (one tensor if tied): HealthGPT's 'fusion' layers,
        and the rows a family keeps of its own (:mod:`healthgpt.model.family_rows`)."""
        params = [self.lm.get_input_embeddings().weight, self.lm.get_output_embeddings().weight]
        for module in family_row_modules(self.lm):
            params += list(module.families.parameters())
        return list({id(p): p for p in params}.values())

    @property
    def tied_embeddings(self) -> bool:
        """True when the LM head shares the input embedding's table."""
        return self.lm.get_input_embeddings().weight is self.lm.get_output_embeddings().weight

    def set_trainable(
        self,
        *,
        plugins: bool = True,
        projectors: bool = True,
        embeddings: bool = False,
        families: Sequence[str] | None = None,
    ) -> None:
        """Freeze everything, then unfreeze the chosen parts (of the chosen families)."""
        families = tuple(families or self.families)
        self.requires_grad_(False)
        if plugins:
            for family in families:
                for p in plugin_parameters(self.lm, family):
                    p.requires_grad_(True)
        if projectors:
            for family in families:
                self.projectors[family].requires_grad_(True)
        if embeddings:
            for p in self.embedding_parameters():
                p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer in backward (non-reentrant checkpointing).

        The recomputation runs after the forward's plugin route has ended; ``context_fn``
        re-enters the route each layer ran with, so it recomputes with the same plugin."""
        kwargs = {"use_reentrant": False, "context_fn": checkpoint_context}
        if hasattr(self.lm, "activation_checkpointing_enable"):  # transformers >= 5.2x
            self.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # ----- VQ weights -----

    @property
    def vq_weights(self) -> str:
        """The VQ weights images are decoded with: "path (sha256 ...)" or "random (dry run)"."""
        report = self.load_reports.get("vq")
        return report.source if report is not None else RANDOM_VQ

    def check_vq_ready(self) -> None:
        """Refuse image generation with a random VQGAN for a preset that needs a trained one
        (m3, l14), unless the model was loaded as a dry run (``vq_dry_run``)."""
        if self.config.requires_trained_vq and self.vq_weights == RANDOM_VQ and not self.vq_dry_run:
            raise VQNotTrained(
                f"preset {self.config.name!r} decodes images with a randomly initialized VQGAN; "
                "set its VQ checkpoint (config.vq.ckpt_path, yaml_path and their sha256) or "
                "load the model with vq_dry_run=True for a dry run"
            )

    # ----- inputs -----

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    def format_conversation(self, conversations: Sequence[Mapping[str, str]]) -> dict:
        """``input_ids`` and ``labels`` of one sample (see :class:`ConversationFormatter`)."""
        return self.formatter(conversations)

    def collate(self, samples: Sequence[Mapping[str, object]]) -> dict[str, object]:
        """Pad formatted samples (+ ``task_family``, ``pixel_values``) into a forward batch."""
        return collate(samples, self.tokenizer.pad_token_id, self.vision.image_size)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> [3, S, S] CLIP input (padded to square with the CLIP mean)."""
        return self.image_processor.one(image)

    def image_to_codes(
        self,
        images: Image.Image | list[Image.Image],
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PIL image(s) -> VQ codes [B, h, w] (the targets of generation samples), resized as
        ``config.vq_preprocess`` says; ``sample`` draws Gumbel codes as the official
        ``img2idx`` does (see :meth:`VQTokenizer.encode`; argmax by default)."""
        pixels = images_to_tensor(images, self.vq.config.resolution, self.config.vq_preprocess)
        return self.vq.encode(pixels.to(self._device), sample=sample, generator=generator)

    def image_to_answer(self, image: Image.Image) -> str:
        """The answer text of a generation sample whose target is ``image``."""
        codes = self.image_to_codes(image)[0]
        return codes_to_text(codes, newlines=self.config.image_newlines)

    def embed(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, family: str
    ) -> torch.Tensor:
        """Token embeddings with ``family``'s projected HVP features at the image positions."""
        image_pos = input_ids == IMAGE_TOKEN_ID
        embeds = self.lm.get_input_embeddings()(input_ids.clamp(min=0))
        if not image_pos.any():
            return embeds
        if pixel_values is None:
            raise ValueError("input_ids hold image positions but pixel_values is missing")
        has_image = image_pos.any(dim=1)
        counts = image_pos.sum(dim=1)[has_image]
        if (counts != self.num_image_tokens).any():
            raise ValueError(f"each image needs {self.num_image_tokens} positions, got {counts}")
        features = self.vision(pixel_values[has_image], family)
        projector = self.projectors[family]
        features = projector(features.to(projector[0].weight.dtype))
        return embeds.masked_scatter(image_pos.unsqueeze(-1), features.to(embeds.dtype))

    # ----- training -----

    def forward(self, batch: Mapping[str, object]) -> HealthGPTOutput:
        input_ids = batch["input_ids"]
        labels = batch["labels"]
        families = batch["task_family"]
        if isinstance(families, str):
            families = [families] * input_ids.shape[0]
        answer_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
        total = batch.get("num_items_in_batch")
        total = float(answer_tokens if total is None else total)
        total = total if total > 0 else 1.0  # no answer tokens anywhere: the loss is 0 anyway
        loss = input_ids.new_zeros((), dtype=torch.float32)
        summed = 0.0
        family_losses, family_tokens = {}, {}
        with self.autocast():
            for family in dict.fromkeys(families):
                rows = [i for i, f in enumerate(families) if f == family]
                sub = _select_rows(batch, rows, len(families))
                with self.active_plugin(family):
                    loss_sum, n = self._loss_sum(sub, family)
                loss = loss + loss_sum / total
                summed += float(loss_sum.detach())
                family_losses[family] = float(loss_sum.detach() / max(n, 1))
                family_tokens[family] = n
        return HealthGPTOutput(loss, family_losses, family_tokens, summed, answer_tokens)

    @torch.no_grad()
    def row_losses(self, batch: Mapping[str, object]) -> torch.Tensor:
        """Mean answer-token cross-entropy of each row of a batch ([B], fp32; nan for a row
        without answer tokens): per-sample losses from one batched pass, for validation."""
        families = batch["task_family"]
        size = batch["input_ids"].shape[0]
        if isinstance(families, str):
            families = [families] * size
        out = torch.full((size,), float("nan"))
        with self.autocast():
            for family in dict.fromkeys(families):
                rows = [i for i, f in enumerate(families) if f == family]
                with self.active_plugin(family):
                    logits, targets, keep = self._answer_logits(
                        _select_rows(batch, rows, size), family
                    )
                tokens = F.cross_entropy(logits.float(), targets, reduction="none").cpu()
                owner = keep.nonzero()[:, 0].cpu()
                sums = torch.zeros(len(rows)).index_add_(0, owner, tokens)
                counts = torch.zeros(len(rows)).index_add_(0, owner, torch.ones(len(tokens)))
                out[rows] = sums / counts
        return out

    def _loss_sum(self, batch: Mapping[str, object], family: str) -> tuple[torch.Tensor, int]:
        """Summed next-token cross-entropy over the answer tokens, and their count."""
        logits, targets, _ = self._answer_logits(batch, family)
        loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
        return loss_sum, len(targets)

    def _answer_logits(
        self, batch: Mapping[str, object], family: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits at the answer positions, their next tokens, and the [B, T-1] mask of where
        they are."""
        mask = batch["attention_mask"]
        length = int(mask.sum(dim=1).max())  # right padding: drop all-pad columns
        input_ids, mask = batch["input_ids"][:, :length], mask[:, :length]
        labels = batch["labels"][:, :length]
        embeds = self.embed(input_ids, batch.get("pixel_values"), family)
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        decoder = self.lm.get_decoder()
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        hidden = hidden.last_hidden_state
        # The LM head only at answer positions: prompts and image patches need no logits.
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep])
        return logits, targets[keep], keep

    # ----- inference -----

    @torch.no_grad()
    def generate_text(
        self, image: Image.Image | None, question: str, max_new_tokens: int = COM_MAX_NEW_TOKENS
    ) -> str:
        """Greedy answer of the comprehension plugin to ``question`` about ``image``
        (``max_new_tokens``: com_infer.py's default, :data:`COM_MAX_NEW_TOKENS`)."""
        return self.generate_text_batch([image], [question], max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def generate_text_batch(
        self,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        max_new_tokens: int = COM_MAX_NEW_TOKENS,
    ) -> list[str]:
        """:meth:`generate_text` for several questions in one decoding pass (left-padded, one
        LM call per new token for all of them): the same answers, far fewer small calls."""
        prompts, pixels = self._prompts(images, questions)
        with self._inference(COMPREHENSION), self.autocast():
            rows = self._decode_batch(
                prompts, pixels, COMPREHENSION, max_new_tokens, stop=self._stop_ids
            )
        sep = PROMPT_STYLES[self.config.prompt].sep
        return [
            self.tokenizer.decode(ids, skip_special_tokens=True).split(sep)[0].strip()
            for ids in rows
        ]

    @torch.no_grad()
    def generate_image(
        self,
        image: Image.Image | None,
        instruction: str,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "constrained",
        max_new_tokens: int = GEN_MAX_NEW_TOKENS,
    ) -> Image.Image:
        """An image from the generation plugin: VQ code tokens decoded by the VQ tokenizer
        (see :meth:`generate_image_codes`). Greedy unless ``temperature`` > 0."""
        codes = self.generate_image_codes(
            image,
            instruction,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            decoding=decoding,
            max_new_tokens=max_new_tokens,
        )
        return tensor_to_images(self.vq.decode(codes[None].to(self._device)))[0]

    @torch.no_grad()
    def generate_image_batch(
        self, images: Sequence[Image.Image | None], instructions: Sequence[str]
    ) -> list[Image.Image]:
        """Greedy constrained :meth:`generate_image` for several inputs in one decoding pass
        (every row has the grid's fixed length) and one VQ decode."""
        codes = self.generate_image_codes_batch(images, instructions)
        return tensor_to_images(self.vq.decode(codes.to(self._device)))

    @torch.no_grad()
    def generate_image_codes_batch(
        self, images: Sequence[Image.Image | None], instructions: Sequence[str]
    ) -> torch.Tensor:
        """Greedy constrained :meth:`generate_image_codes` of several inputs: [B, h, w]."""
        self.check_vq_ready()
        constraint = ImageCodeConstraint(
            self.image_vocab, self.vq.grid_size, newlines=self.config.image_newlines
        )
        prompts, pixels = self._prompts(images, instructions, answer_prefix=START)
        with self._inference(GENERATION), self.autocast():
            rows = self._decode_batch(
                prompts, pixels, GENERATION, constraint.length, constraint=constraint
            )
        return torch.stack([self.image_vocab.ids_to_codes(ids, self.vq.grid_size) for ids in rows])

    @torch.no_grad()
    def generate_image_codes(
        self,
        image: Image.Image | None,
        instruction: str,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        decoding: str = "constrained",
        max_new_tokens: int = GEN_MAX_NEW_TOKENS,
    ) -> torch.Tensor:
        """The [h, w] code grid of a generated image, after ``<start_index>``.

        ``decoding="constrained"``: only code tokens (and newlines at row ends) are allowed
        until the grid is full, so every sequence parses. ``"official"``: as gen_infer.py,
        free decoding up to ``max_new_tokens`` (its default 1100) or a stop token, then the
        code numbers are read back from the decoded text (:func:`codes_from_text`:
        ``<pixel_newline>``, markers and stray text tokens are tolerated)."""
        if decoding not in IMAGE_DECODING:
            raise ValueError(f"decoding must be one of {IMAGE_DECODING}, got {decoding!r}")
        self.check_vq_ready()
        prompt, pixels = self._prompt(image, instruction, answer_prefix=START)
        constraint = None
        if decoding == "constrained":
            constraint = ImageCodeConstraint(
                self.image_vocab, self.vq.grid_size, newlines=self.config.image_newlines
            )
            max_new_tokens = constraint.length
        with self._inference(GENERATION), self.autocast():
            ids = self._decode(
                prompt,
                pixels,
                GENERATION,
                max_new_tokens,
                stop=frozenset() if constraint else self._stop_ids,
                constraint=constraint,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
        if constraint is not None:
            return self.image_vocab.ids_to_codes(ids, self.vq.grid_size)
        ids = [i for i in ids if i not in self._stop_ids]
        text = self.tokenizer.decode(ids)
        return codes_from_text(text, self.vq.grid_size, self.image_vocab.num_codes)

    def _prompt(
        self, image: Image.Image | None, text: str, answer_prefix: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        prompts, pixels = self._prompts([image], [text], answer_prefix)
        return prompts[0], pixels

    def _prompts(
        self,
        images: Sequence[Image.Image | None],
        texts: Sequence[str],
        answer_prefix: str = "",
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Each prompt's ids, and the pixels of all rows ([B, 3, S, S]; zeros where a row has
        no image, which `embed` never reads), or None when no row has an image."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} prompts")
        build = (
            self.formatter.official_prompt
            if self.config.prompt_tokenization == "official"
            else self.formatter.prompt
        )
        prompts = [
            build(f"{IMAGE_PLACEHOLDER}\n{text}" if image is not None else text, answer_prefix)
            for image, text in zip(images, texts, strict=True)
        ]
        prompts = [prompt.to(self._device) for prompt in prompts]
        if all(image is None for image in images):
            return prompts, None
        size = self.vision.image_size
        pixels = torch.stack(
            [
                torch.zeros(3, size, size) if image is None else self.image_processor.one(image)
                for image in images
            ]
        )
        return prompts, pixels.to(self._device)

    @property
    def _stop_ids(self) -> set[int]:
        stop = {self.tokenizer.eos_token_id}
        sep_ids = self.tokenizer.encode(PROMPT_STYLES[self.config.prompt].sep)
        if len(sep_ids) == 1:
            stop.add(sep_ids[0])
        return stop

    @contextmanager
    def _inference(self, family: str) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with self.active_plugin(family):
                yield
        finally:
            self.train(was_training)

    def _decode(self, prompt: torch.Tensor, *args: Any, **options: Any) -> list[int]:
        """`_decode_batch` for one prompt (same arguments after the prompt)."""
        return self._decode_batch([prompt], *args, **options)[0]

    def _decode_batch(
        self,
        prompts: Sequence[torch.Tensor],
        pixels: torch.Tensor | None,
        family: str,
        max_new_tokens: int,
        *,
        stop: set[int] = frozenset(),
        constraint: ImageCodeConstraint | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Token-by-token decoding with the KV cache, all prompts at once.

        Prompts are left-padded (masked, with positions counted from each row's first token),
        so every row's next token sits in the last column. A row stops at a `stop` token (kept,
        as the last of its ids); decoding ends when every row has stopped."""
        device = prompts[0].device
        longest = max(len(prompt) for prompt in prompts)
        ids = torch.full(
            (len(prompts), longest), self.tokenizer.pad_token_id, dtype=torch.long, device=device
        )
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = prompt
            mask[row, longest - len(prompt) :] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        embeds = self.embed(ids, pixels, family)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        positions = positions[:, -1:]
        generated: list[list[int]] = [[] for _ in prompts]
        running = list(range(len(prompts)))
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            if constraint is not None:
                logits = constraint.mask_logits(logits, step)
            tokens = [_pick(row, temperature, top_k, generator) for row in logits]
            for row, token in zip(running, tokens, strict=True):
                generated[row].append(token)
            going = [i for i, token in enumerate(tokens) if token not in stop]
            if not going or step + 1 == max_new_tokens:
                break
            if len(going) < len(tokens):  # drop finished rows from the batch and the cache
                keep = torch.tensor(going, device=device)
                out.cache.batch_select_indices(keep)
                mask, positions = mask[keep], positions[keep]
                running = [running[i] for i in going]
                tokens = [tokens[i] for i in going]
            mask = torch.cat([mask, mask.new_ones(len(going), 1)], dim=1)
            positions = positions + 1
            out = self.lm(
                input_ids=torch.tensor(tokens, device=device)[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=out.cache,
                use_cache=True,
            )
        return generated

    @property
    def _device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _select_rows(batch: Mapping[str, object], rows: list[int], size: int) -> dict[str, object]:
    """The batch restricted to ``rows`` (no copy when that is all of them)."""
    if len(rows) == size:
        return dict(batch)
    index = torch.tensor(rows)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
            out[key] = value[index.to(value.device)]
        else:
            out[key] = value
    return out
