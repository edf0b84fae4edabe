"""``load_model``: the one way to turn a preset into a ready :class:`HealthGPT`."""

from __future__ import annotations

import logging

import torch

from healthgpt.model.healthgpt import HealthGPT
from healthgpt.model.hlora import inject_hlora
from healthgpt.model.image_tokens import add_image_tokens
from healthgpt.model.language import build_language_model
from healthgpt.model.load_report import LoadReport
from healthgpt.model.presets import ModelConfig, get_preset
from healthgpt.model.prompt import PROMPT_STYLES
from healthgpt.model.vision import HierarchicalVisionEncoder, build_vision_tower
from healthgpt.model.vq import build_vq_tokenizer
from healthgpt.model.weights import load_official_weights

log = logging.getLogger(__name__)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(
    preset_or_config: str | ModelConfig,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> HealthGPT:
    """Build a preset (``"m3"``, ``"l14"``, ``"tiny"``, ``"smollm2"``) or a :class:`ModelConfig`.

    Steps: base LM + tokenizer, VQ tokens added to the vocabulary (mean-initialized rows),
    H-LoRA plugins injected into every linear of the LM but its head, CLIP tower with HVP, one
    projector per family, VQ tokenizer; then the official HealthGPT weights if the config
    names them (their :class:`LoadReport` is kept in ``model.load_reports``). Everything is
    frozen except the plugins and projectors; change that with ``model.set_trainable``. A
    bf16/fp16 ``dtype`` also sets ``model.autocast_dtype`` (see :class:`HealthGPT`).
    """
    config = get_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or default_dtype(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # random parts are reproducible, global RNG untouched
        lm, tokenizer = build_language_model(
            config.lm,
            dtype=dtype,
            local_files_only=config.local_files_only,
            special_tokens=PROMPT_STYLES[config.prompt].special_tokens,
        )
        image_vocab = add_image_tokens(tokenizer, lm, config.vq.n_embed)
        lm.requires_grad_(False)
        inject_hlora(lm, config.plugins)
        tower = build_vision_tower(
            config.vision.name_or_path,
            config.vision.random_config,
            local_files_only=config.local_files_only,
            dtype=dtype,
        )
        vision = HierarchicalVisionEncoder(tower, config.vision.select_layers)
        vq, vq_report = build_vq_tokenizer(config.vq)
        if vq_report is None and config.name in ("m3", "l14"):
            log.warning(
                "%s: no VQGAN checkpoint configured; image generation is untrained", config.name
            )
        model = HealthGPT(config, lm, tokenizer, vision, vq, image_vocab)
        model.projectors.to(dtype)
    model.to(device)
    model.vq.float()  # the VQ decoder is small; keep it in fp32 for image quality
    model.set_trainable()
    # One precision policy: a half-precision model runs every pass under autocast in its dtype,
    # so trainable parts made fp32 (master weights) meet its half-precision base safely.
    model.autocast_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else None
    model.load_reports = _load_official(model, config)
    return model


def _load_official(model: HealthGPT, config: ModelConfig) -> dict[str, LoadReport]:
    reports = {}
    weights = config.official_weights
    for family, path in (
        ("comprehension", weights.comprehension),
        ("generation", weights.generation),
    ):
        if path:
            reports[family] = load_official_weights(model, path, family=family)
    if weights.fusion:
        reports["fusion"] = load_official_weights(model, weights.fusion)
    for name, report in reports.items():
        if report.unmapped:
            log.warning(
                "%s weights: %d keys not mapped: %s", name, len(report.unmapped), report.summary()
            )
    return reports
