"""A stand-in HealthGPT for the training pipeline until `healthgpt.model` ships its own.

Why it exists: the training code (data, stages, loop, checkpoints, Pipes) must be testable
now, and `healthgpt.model` is being written concurrently. This module is deliberately thin and
built from the same parts the paper names, so the stage semantics are real:

- a causal LM (transformers Llama, SDPA attention) whose linears carry H-LoRA plugins per task
  family (`healthgpt.model.hlora`), with the vocabulary extended by the VQ codes;
- hierarchical visual perception: a small frozen ViT whose shallow layer feeds the generation
  projector and whose deep layer feeds the comprehension projector;
- a small trainable VQ tokenizer (64x64 images -> 4x4 codes).

Text is byte-level (no tokenizer download). `model_api` prefers `healthgpt.model` when it
provides `load_model`; delete this module then.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from healthgpt.model.constants import COMPREHENSION, GENERATION, IGNORE_INDEX, IMAGE_TOKEN_ID
from healthgpt.model.hlora import HLoRAConfig, inject_hlora, set_active_plugin

PAD, BOS, EOS = 256, 257, 258
CODE_OFFSET = 259


@dataclass(frozen=True)
class TinySpec:
    """Shapes of the stand-in model (a 2-core CPU trains it in minutes)."""

    image_size: int = 64
    patch: int = 8
    vision_dim: int = 96
    vision_layers: int = 2
    image_tokens: int = 16  # patches pooled 2x2
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    codebook: int = 256
    code_grid: int = 4
    vq_dim: int = 32
    hlora_rank: int = 16
    hlora_experts: int = 4
    dropout: float = 0.05

    @property
    def vocab(self) -> int:
        return CODE_OFFSET + self.codebook

    @property
    def num_codes(self) -> int:
        return self.code_grid**2


def decode_png(data: bytes | None, size: int) -> torch.Tensor:
    """PNG bytes -> float [3, size, size] in [-1, 1]; a blank image when there is none."""
    if data is None:
        return torch.zeros(3, size, size)
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class TinyVQ(nn.Module):
    """VQ-VAE with a 4x4 code grid; the stand-in for the taming VQGAN the paper uses."""

    def __init__(self, spec: TinySpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.vq_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, 4), nn.GELU(), nn.Conv2d(32, d, 4, 4), nn.GELU(), nn.Conv2d(d, d, 1)
        )
        self.codebook = nn.Embedding(spec.codebook, d)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(d, 32, 4, 4), nn.GELU(), nn.ConvTranspose2d(32, 3, 4, 4)
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codes = torch.cdist(flat, self.codebook.weight).argmin(-1)
        return codes.view(z.shape[0], -1), self.codebook(codes).view(*z.shape[:1], *z.shape[2:], -1)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, num_codes] code indices."""
        return self.quantize(self.encoder(pixels.float()))[0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        g = self.spec.code_grid
        q = self.codebook(codes).view(codes.shape[0], g, g, -1).permute(0, 3, 1, 2)
        return self.decoder(q).clamp(-1, 1)

    def training_loss(self, pixels: torch.Tensor) -> torch.Tensor:
        z = self.encoder(pixels)
        _, q = self.quantize(z)
        q = q.permute(0, 3, 1, 2)
        recon = self.decoder(z + (q - z).detach())
        return (
            F.mse_loss(recon, pixels) + F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())
        )


class TinyVision(nn.Module):
    """A frozen ViT-like tower returning (shallow, deep) patch features, pooled 2x2."""

    def __init__(self, spec: TinySpec) -> None:
        super().__init__()
        self.spec = spec
        n = (spec.image_size // spec.patch) ** 2
        self.patch = nn.Conv2d(3, spec.vision_dim, spec.patch, spec.patch)
        self.position = nn.Parameter(torch.randn(1, n, spec.vision_dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                spec.vision_dim, 4, spec.vision_dim * 2, dropout=0.0, batch_first=True
            )
            for _ in range(spec.vision_layers)
        )

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch(pixels).flatten(2).transpose(1, 2) + self.position
        states = []
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return self._pool(states[0]), self._pool(states[-1])

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        side = int(x.shape[1] ** 0.5)
        grid = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)


class InterimHealthGPT(nn.Module):
    """LM + H-LoRA plugins + hierarchical vision + per-family projectors."""

    def __init__(self, spec: TinySpec) -> None:
        super().__init__()
        self.spec = spec
        config = LlamaConfig(
            vocab_size=spec.vocab,
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=2048,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
            tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        self.lm = LlamaForCausalLM(config)
        hlora = HLoRAConfig(
            spec.hlora_rank, 2.0 * spec.hlora_rank, spec.hlora_experts, spec.dropout
        )
        inject_hlora(self.lm.model, {COMPREHENSION: hlora, GENERATION: hlora})
        self.vision = TinyVision(spec)
        self.projectors = nn.ModuleDict(
            {
                family: nn.Sequential(
                    nn.Linear(spec.vision_dim, spec.hidden),
                    nn.GELU(),
                    nn.Linear(spec.hidden, spec.hidden),
                )
                for family in (COMPREHENSION, GENERATION)
            }
        )

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor, family: str) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(input_ids.clamp(min=0))
        slots = input_ids == IMAGE_TOKEN_ID
        if slots.any():
            shallow, deep = self.vision(pixels.to(embeds.dtype))
            features = deep if family == COMPREHENSION else shallow
            image = self.projectors[family](features).to(embeds.dtype)
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), image[slots.any(-1)])
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor,
        family: str,
        labels: torch.Tensor | None = None,
    ) -> Any:
        set_active_plugin(self.lm, family)
        embeds = self.embed(input_ids, pixels, family)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)


class ByteFormatter:
    """Conversation -> (input_ids, labels); labels only on answer bytes and the closing EOS.

    Picklable and model-free, so DataLoader workers run it.
    """

    def __init__(self, spec: TinySpec, max_length: int) -> None:
        self.spec, self.max_length = spec, max_length

    @staticmethod
    def text(value: str) -> list[int]:
        return list(value.encode("utf-8"))

    def __call__(self, turns: list[dict[str, str]], family: str) -> dict[str, Any]:
        ids, labels, code_slots = [BOS], [IGNORE_INDEX], []
        for turn in turns:
            value = turn["value"]
            if turn["from"] == "human":
                prompt: list[int] = self.text("USER: ")
                if "<image>" in value:
                    before, after = value.split("<image>", 1)
                    prompt += self.text(before) + [IMAGE_TOKEN_ID] * self.spec.image_tokens
                    value = after.lstrip("\n")
                prompt += self.text(value + "\nASSISTANT: ")
                ids += prompt
                labels += [IGNORE_INDEX] * len(prompt)
            else:
                if "<target_image>" in value:
                    start = len(ids)
                    answer = [PAD] * self.spec.num_codes + [EOS]
                    code_slots = list(range(start, start + self.spec.num_codes))
                else:
                    answer = self.text(value) + [EOS]
                ids += answer
                labels += answer
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        slots = torch.zeros(len(ids), dtype=torch.bool)
        slots[[s for s in code_slots if s < len(ids)]] = True
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "code_slots": slots,
        }

    def prompt(self, turns: list[dict[str, str]]) -> torch.Tensor:
        """The ids of a conversation's first human turn, ready for the assistant's answer."""
        return self(turns[:1], COMPREHENSION)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def train_vq(
    vq: TinyVQ, images: list[torch.Tensor], steps: int = 300, batch: int = 16, lr: float = 3e-3
) -> list[float]:
    """Fit the tiny VQ tokenizer on a list of [3, H, W] images; return the loss curve."""
    generator = torch.Generator().manual_seed(0)
    data = torch.stack(images)
    with torch.no_grad():  # start the codebook on encoder outputs: no dead codes at step 0
        z = vq.encoder(data[: 4 * batch]).permute(0, 2, 3, 1).reshape(-1, vq.spec.vq_dim)
        pick = torch.randint(0, len(z), (vq.spec.codebook,), generator=generator)
        vq.codebook.weight.copy_(z[pick] + 0.01 * torch.randn_like(z[pick]))
    optimizer = torch.optim.Adam(vq.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(data), (min(batch, len(data)),), generator=generator)
        loss = vq.training_loss(data[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
