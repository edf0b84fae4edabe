"""``load_model``: the one way to turn a preset into a ready :class:`HealthGPT`."""

from __future__ import annotations

import logging

import torch

from healthgpt.model.constants import COMPREHENSION, GENERATION
from healthgpt.model.healthgpt import RANDOM_VQ, HealthGPT
from healthgpt.model.hlora import inject_hlora
from healthgpt.model.image_tokens import add_image_tokens
from healthgpt.model.language import build_language_model
from healthgpt.model.load_report import LoadReport
from healthgpt.model.presets import ModelConfig, get_preset
from healthgpt.model.prompt import PROMPT_STYLES
from healthgpt.model.vision import HierarchicalVisionEncoder, build_vision_tower
from healthgpt.model.vq import VQLoadReport, build_vq_tokenizer
from healthgpt.model.weights import FUSION, load_official_release

log = logging.getLogger(__name__)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(
    preset_or_config: str | ModelConfig,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    allow_partial: bool = False,
    vq_dry_run: bool = False,
) -> HealthGPT:
    """Build a preset (``"m3"``, ``"l14"``, ``"tiny"``, ``"smollm2"``) or a :class:`ModelConfig`.

    Steps: base LM + tokenizer, VQ tokens added to the vocabulary (mean-initialized rows),
    H-LoRA plugins injected into every linear of the LM but its head, CLIP tower with HVP, one
    projector per family, VQ tokenizer; then the official HealthGPT weights if the config
    names them (their :class:`LoadReport` is kept in ``model.load_reports``, with one for
    the VQ weights under ``"vq"``). Everything is frozen except the plugins and projectors;
    change that with ``model.set_trainable``. A bf16/fp16 ``dtype`` also sets
    ``model.autocast_dtype`` (see :class:`HealthGPT`).

    ``allow_partial``: load official files that leave expected tensors unfilled (otherwise
    :class:`~healthgpt.model.weights.IncompleteWeights` names them). ``vq_dry_run``: let a
    preset that needs a trained VQGAN (m3, l14) generate images with a random one.
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
        model = HealthGPT(config, lm, tokenizer, vision, vq, image_vocab)
        model.vq_dry_run = vq_dry_run
        model.projectors.to(dtype)
    model.to(device)
    model.vq.float()  # the VQ decoder is small; keep it in fp32 for image quality
    model.set_trainable()
    # One precision policy: a half-precision model runs every pass under autocast in its dtype,
    # so trainable parts made fp32 (master weights) meet its half-precision base safely.
    model.autocast_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else None
    weights = config.official_weights
    files = {
        COMPREHENSION: weights.comprehension,
        GENERATION: weights.generation,
        FUSION: weights.fusion,
    }
    reports = load_official_release(model, files, allow_partial=allow_partial)
    for name, report in reports.items():
        if report.unmapped:
            log.warning(
                "%s weights: %d keys not mapped: %s", name, len(report.unmapped), report.summary()
            )
    reports["vq"] = vq_load_report(config, vq_report)
    model.load_reports = reports
    return model


def vq_load_report(config: ModelConfig, vq_report: VQLoadReport | None) -> LoadReport:
    """What VQ weights the model decodes with: the file and its sha256, or "random (dry
    run)"."""
    if vq_report is None:
        return LoadReport(source=RANDOM_VQ)
    path = config.vq.ckpt_path
    return LoadReport(
        loaded=list(vq_report.loaded),
        unmapped=dict(vq_report.ignored),
        source=f"{path} (sha256 {config.vq.ckpt_sha256})",
    )
