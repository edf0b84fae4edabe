"""Options that reproduce the official inference scripts, each on a toy model."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from healthgpt.model import get_preset, load_model
from healthgpt.model.healthgpt import (
    COM_MAX_NEW_TOKENS,
    GEN_MAX_NEW_TOKENS,
    HealthGPT,
    VQNotTrained,
)
from healthgpt.model.image_tokens import code_token, codes_from_text
from healthgpt.model.vq import VQTokenizer, images_to_tensor
from tests.model.test_vq import SMALL_GUMBEL


def test_max_new_tokens_are_the_official_scripts():
    text = inspect.signature(HealthGPT.generate_text).parameters["max_new_tokens"].default
    image = inspect.signature(HealthGPT.generate_image).parameters["max_new_tokens"].default
    assert (text, image) == (COM_MAX_NEW_TOKENS, GEN_MAX_NEW_TOKENS) == (1024, 1100)


def test_codes_are_read_back_from_text_as_gen_infer_does():
    codes = list(range(9))
    text = "<start_index>" + "".join(code_token(c) for c in codes[:3]) + "<pixel_newline>"
    text += "junk" + "".join(code_token(c) for c in codes[3:]) + "<pixel_newline><end_index>"
    assert codes_from_text(text, 3, 16).flatten().tolist() == codes
    # Extra codes past the grid are dropped; too few or out-of-codebook numbers fail.
    assert codes_from_text(text + "<idx_1>", 3, 16).shape == (3, 3)
    with pytest.raises(ValueError, match="8 codes, 9 needed"):
        codes_from_text(text.replace("<idx_8>", ""), 3, 16)
    with pytest.raises(ValueError, match="not codes"):
        codes_from_text(text.replace("<idx_8>", "<idx_99>"), 3, 16)


def test_official_image_decoding_is_free_and_reads_the_codes(tiny_model, monkeypatch):
    model = tiny_model
    grid = model.vq.grid_size
    vocab = model.image_vocab
    stray = model.tokenizer.encode("ok")
    script = [vocab.first_code_id + i % 7 for i in range(grid * grid)]
    script[grid:grid] = [vocab.newline_id, *stray]  # a row newline and stray text tokens
    script += [vocab.end_id, model.tokenizer.eos_token_id]
    seen = {}

    def decode(prompt, pixels, family, max_new_tokens, **kwargs):
        seen.update(max_new_tokens=max_new_tokens, **kwargs)
        return script

    monkeypatch.setattr(model, "_decode", decode)
    codes = model.generate_image_codes(None, "make an image", decoding="official")
    assert codes.flatten().tolist() == [i % 7 for i in range(grid * grid)]
    assert seen["max_new_tokens"] == GEN_MAX_NEW_TOKENS and seen["constraint"] is None
    assert model.tokenizer.eos_token_id in seen["stop"]
    # Constrained decoding stays the default: the grid's length, under the constraint.
    script[:] = [vocab.first_code_id] * (grid * grid)
    assert model.generate_image_codes(None, "make an image").sum() == 0
    assert seen["max_new_tokens"] == grid * grid and seen["constraint"] is not None
    with pytest.raises(ValueError, match="decoding"):
        model.generate_image_codes(None, "x", decoding="beam")


def test_gumbel_sampling_is_an_option_argmax_the_default():
    torch.manual_seed(0)
    vq = VQTokenizer(SMALL_GUMBEL).eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    argmax = vq.encode(images)
    torch.testing.assert_close(vq.encode(images), argmax)  # deterministic
    draw = vq.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    again = vq.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(draw, again)  # seeded draws repeat
    assert not torch.equal(draw, argmax)  # and differ from the argmax
    with pytest.raises(ValueError, match="Gumbel"):
        VQTokenizer(replace(SMALL_GUMBEL, quantizer="nearest")).encode(images, sample=True)


def test_stretch_and_pad_preprocessing():
    wide = Image.fromarray(np.full((20, 40, 3), 255, dtype=np.uint8), "RGB")
    padded = images_to_tensor(wide, 16, "pad")
    stretched = images_to_tensor(wide, 16, "stretch")
    assert padded[0, :, 0].max() == -1.0  # black band above the image
    assert stretched.min() == 1.0  # the white image fills the square
    with pytest.raises(ValueError, match="mode"):
        images_to_tensor(wide, 16, "crop")
    assert get_preset("m3").vq_preprocess == get_preset("l14").vq_preprocess == "stretch"
    assert get_preset("tiny").vq_preprocess == "pad"


def test_fp16_model_generates(image):
    model = load_model("tiny", device="cpu", dtype=torch.float16).eval()
    assert model.autocast_dtype == torch.float16
    assert model.lm.get_input_embeddings().weight.dtype == torch.float16
    assert isinstance(model.generate_text(image, "What?", max_new_tokens=3), str)


def test_random_vqgan_refused_for_real_presets_unless_dry_run(tiny_model):
    model = tiny_model
    model.config = replace(model.config, requires_trained_vq=True)
    try:
        assert model.vq_weights == "random (dry run)"
        with pytest.raises(VQNotTrained, match="dry run"):
            model.generate_image(None, "x")
        model.vq_dry_run = True
        model.check_vq_ready()
    finally:
        model.config = replace(model.config, requires_trained_vq=False)
        model.vq_dry_run = False
