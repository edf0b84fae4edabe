"""A minimal transcription of the official HealthGPT inference code, for parity tests.

Transcribed from DCDmllm/HealthGPT (reference only; no code of it runs here):
- ``llava/peft/tuners/lora.py`` ``Linear``: the H-LoRA layer (inference path, no dropout);
- ``llava/demo/utils.py``: ``find_all_linear_names``, ``add_special_tokens_and_resize_model``;
- ``llava/mm_utils.py``: ``tokenizer_image_token``;
- ``llava/model/llava_arch.py``: the image features spliced in at ``IMAGE_TOKEN_INDEX``;
- the module tree of ``get_peft_model(LlavaPhiForCausalLM)``: ``base_model.model`` is the
  LLaVA-Phi LM, whose ``.model`` holds ``layers``, ``embed_tokens`` and ``mm_projector``, so
  the state-dict keys are the released files' (``base_model.model.model.layers.N...``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_TOKEN_INDEX = -200


class OfficialLoraLinear(nn.Linear):
    """``llava.peft.tuners.lora.Linear``: base weight + softmax-routed concatenated experts."""

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float, lora_nums: int) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None)
        self.weight = base.weight
        self.bias = base.bias
        self.lora_num = lora_nums
        self.times = r // lora_nums
        self.lora_route = nn.Linear(base.in_features, lora_nums, bias=False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.scaling = lora_alpha / r * lora_nums

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, self.weight, bias=self.bias)
        route_weight = F.softmax(self.lora_route(x), dim=-1).to(result.dtype)
        output_a = self.lora_A(x) * self.scaling
        router_expand = route_weight.repeat_interleave(self.times, dim=-1)
        return result + self.lora_B(router_expand * output_a)


def find_all_linear_names(model: nn.Module) -> list[str]:
    """utils.find_all_linear_names: last name part of every Linear but lm_head / multimodal."""
    names = set()
    for name, module in model.named_modules():
        if any(k in name for k in ("mm_projector", "vision_tower", "vision_resampler")):
            continue
        if isinstance(module, nn.Linear):
            parts = name.split(".")
            names.add(parts[0] if len(parts) == 1 else parts[-1])
    names.discard("lm_head")
    return sorted(names)


def add_special_tokens_and_resize_model(tokenizer, model: nn.Module, vq_idx_nums: int) -> int:  # noqa: ANN001
    """utils.add_special_tokens_and_resize_model, on a ``TextTokenizer``."""
    tokens = ["<start_index>", *(f"<idx_{i}>" for i in range(vq_idx_nums))]
    num_new = tokenizer.add_special_tokens([*tokens, "<end_index>", "<pixel_newline>"])
    # The new rows are overwritten below; mean_resizing=False only skips transformers 5's
    # random draw (and its warning), which older transformers did not make.
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if num_new > 0:
        inp = model.get_input_embeddings().weight.data
        out = model.get_output_embeddings().weight.data
        inp[-num_new:] = inp[:-num_new].mean(dim=0, keepdim=True)
        out[-num_new:] = out[:-num_new].mean(dim=0, keepdim=True)
    return num_new


def tokenizer_image_token(
    prompt: str, tokenize: Callable[[str], list[int]], bos_token_id: int | None
) -> list[int]:
    """mm_utils.tokenizer_image_token; ``tokenize(chunk)`` is ``tokenizer(chunk).input_ids``."""
    chunks = [tokenize(chunk) for chunk in prompt.split("<image>")]
    input_ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    seps = [[IMAGE_TOKEN_INDEX] * (offset + 1)] * len(chunks)
    separated = [e for pair in zip(chunks, seps, strict=True) for e in pair][:-1]
    for x in separated:
        input_ids.extend(x[offset:])
    return input_ids


def official_model(
    lm: nn.Module, r: int, lora_alpha: float, lora_nums: int, clip_hidden: int
) -> nn.Module:
    """``get_peft_model(LlavaPhiForCausalLM)`` in miniature around ``lm`` (changed in place)."""
    targets = find_all_linear_names(lm)
    for key in [k for k, _ in lm.named_modules()]:
        if key and any(key.endswith(t) for t in targets):
            parent_name, _, child = key.rpartition(".")
            parent = lm.get_submodule(parent_name)
            setattr(
                parent, child, OfficialLoraLinear(getattr(parent, child), r, lora_alpha, lora_nums)
            )
    hidden = lm.get_input_embeddings().embedding_dim
    lm.model.mm_projector = nn.Sequential(
        nn.Linear(clip_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
    )
    root = nn.Module()
    root.base_model = nn.Module()
    root.base_model.model = lm
    return root


@torch.no_grad()
def official_logits(
    root: nn.Module,
    tower: nn.Module,
    select_layer: int,
    input_ids: list[int],
    pixels: torch.Tensor,
) -> torch.Tensor:
    """LLaVA's forward for one sample: CLIP hidden state ``select_layer`` without CLS,
    ``mm_projector``, spliced at each ``IMAGE_TOKEN_INDEX``; then the LM's logits."""
    lm = root.base_model.model
    features = tower(pixels, output_hidden_states=True).hidden_states[select_layer][:, 1:]
    features = lm.model.mm_projector(features)
    ids = torch.tensor(input_ids)
    embeds, start, image = [], 0, 0
    for pos in (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
        embeds += [lm.get_input_embeddings()(ids[start:pos]), features[image]]
        start, image = pos + 1, image + 1
    embeds.append(lm.get_input_embeddings()(ids[start:]))
    return lm(inputs_embeds=torch.cat(embeds)[None]).logits[0]
