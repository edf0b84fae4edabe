"""VQ codes as LM tokens: ``<start_index> <idx_i>... <end_index>`` (and ``<pixel_newline>``).

The LM vocabulary gains the K code tokens and three markers, added in HealthGPT's order so the
ids are contiguous; the new input- and output-embedding rows start at the mean of the rows
before them (as HealthGPT's ``add_special_tokens_and_resize_model`` does, whose resized
matrices its ``fusion_layer_weights.bin`` holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from healthgpt.model.tokenizer import TextTokenizer

START = "<start_index>"
END = "<end_index>"
NEWLINE = "<pixel_newline>"


def code_token(i: int) -> str:
    return f"<idx_{i}>"


@dataclass(frozen=True)
class ImageTokenVocab:
    """Where the image tokens sit in the LM vocabulary."""

    start_id: int
    end_id: int
    newline_id: int
    first_code_id: int
    num_codes: int

    @property
    def code_ids(self) -> range:
        return range(self.first_code_id, self.first_code_id + self.num_codes)

    def codes_to_ids(self, codes: torch.Tensor, *, newlines: bool = False) -> list[int]:
        """A [h, w] code grid -> token ids ``start, idx..., end`` (row newlines optional)."""
        if codes.dim() != 2:
            raise ValueError(f"expected one [h, w] code grid, got shape {tuple(codes.shape)}")
        rows = (codes.long() + self.first_code_id).tolist()
        ids = [self.start_id]
        for row in rows:
            ids.extend(row)
            if newlines:
                ids.append(self.newline_id)
        ids.append(self.end_id)
        return ids

    def ids_to_codes(self, ids: list[int] | torch.Tensor, grid: int) -> torch.Tensor:
        """Token ids -> a [grid, grid] code tensor; markers are skipped, other tokens are errors."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        markers = {self.start_id, self.end_id, self.newline_id}
        codes = [i - self.first_code_id for i in ids if i not in markers]
        bad = [c for c in codes if not 0 <= c < self.num_codes]
        if bad:
            raise ValueError(f"{len(bad)} tokens are not image codes")
        if len(codes) != grid * grid:
            raise ValueError(f"expected {grid * grid} codes, got {len(codes)}")
        return torch.tensor(codes, dtype=torch.long).view(grid, grid)


def codes_to_text(codes: torch.Tensor, *, newlines: bool = False) -> str:
    """A [h, w] code grid as the answer text of a generation sample."""
    parts = [START]
    for row in codes.long().tolist():
        parts.extend(code_token(c) for c in row)
        if newlines:
            parts.append(NEWLINE)
    parts.append(END)
    return "".join(parts)


def codes_from_text(text: str, grid: int, num_codes: int) -> torch.Tensor:
    """A [grid, grid] code tensor read from decoded generation text, as gen_infer.py does:
    every run of digits is a code (``re.findall(r"\\d+", ...)``), so ``<pixel_newline>``,
    the markers and stray tokens without digits are skipped. Codes past the grid are
    dropped; too few codes, or a number that is no code, is an error (the official script
    fails there too, on the reshape or the codebook lookup)."""
    codes = [int(n) for n in re.findall(r"\d+", text)]
    if len(codes) < grid * grid:
        raise ValueError(f"generated text holds {len(codes)} codes, {grid * grid} needed")
    codes = codes[: grid * grid]
    bad = [c for c in codes if c >= num_codes]
    if bad:
        raise ValueError(f"{len(bad)} numbers are not codes of a {num_codes}-entry codebook")
    return torch.tensor(codes, dtype=torch.long).view(grid, grid)


def add_image_tokens(tokenizer: TextTokenizer, lm: nn.Module, num_codes: int) -> ImageTokenVocab:
    """Add the image tokens to ``tokenizer`` and grow ``lm``'s embeddings (mean-initialized)."""
    tokens = [START, *(code_token(i) for i in range(num_codes)), END, NEWLINE]
    added = tokenizer.add_special_tokens(tokens)
    vocab = ImageTokenVocab(
        start_id=tokenizer.token_to_id(START),
        end_id=tokenizer.token_to_id(END),
        newline_id=tokenizer.token_to_id(NEWLINE),
        first_code_id=tokenizer.token_to_id(code_token(0)),
        num_codes=num_codes,
    )
    last = tokenizer.token_to_id(code_token(num_codes - 1))
    if last - vocab.first_code_id != num_codes - 1 or vocab.start_id != vocab.first_code_id - 1:
        raise ValueError("image tokens did not get contiguous ids; was the tokenizer pre-extended?")
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if added:
        with torch.no_grad():
            for emb in {
                id(e): e for e in (lm.get_input_embeddings(), lm.get_output_embeddings())
            }.values():
                weight = emb.weight
                weight[-added:] = weight[:-added].mean(dim=0, keepdim=True)
    return vocab


class ImageCodeConstraint:
    """Greedy/sampled decoding of an image: only code tokens until the grid is full.

    ``mask_logits(logits, step)`` keeps the code tokens (or the newline at row ends when
    ``newlines``), so every generated sequence parses into exactly ``grid * grid`` codes.
    """

    def __init__(self, vocab: ImageTokenVocab, grid: int, *, newlines: bool = False) -> None:
        self.vocab, self.grid, self.newlines = vocab, grid, newlines

    @property
    def length(self) -> int:
        """Tokens to generate after ``<start_index>`` (the end marker is appended, not sampled)."""
        return self.grid * (self.grid + 1 if self.newlines else self.grid)

    def allowed(self, step: int) -> range:
        if self.newlines and step % (self.grid + 1) == self.grid:
            return range(self.vocab.newline_id, self.vocab.newline_id + 1)
        return self.vocab.code_ids

    def mask_logits(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        allowed = self.allowed(step)
        masked = torch.full_like(logits, float("-inf"))
        masked[..., allowed.start : allowed.stop] = logits[..., allowed.start : allowed.stop]
        return masked
