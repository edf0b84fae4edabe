"""The released HealthGPT files, made by a toy model in the official layout, load into
``HealthGPT`` and give the official logits for each family; incomplete files are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from healthgpt.model import load_model
from healthgpt.model.constants import COMPREHENSION, GENERATION, IMAGE_TOKEN_ID
from healthgpt.model.language import build_language_model
from healthgpt.model.presets import LMConfig, OfficialWeights, tiny
from healthgpt.model.prompt import PROMPT_STYLES
from healthgpt.model.weights import IncompleteWeights
from tests.model.official_layout import (
    add_special_tokens_and_resize_model,
    official_logits,
    official_model,
)
from tests.model.test_checkpoints import PHI3_TOY

QUESTION = "<image>\nWhat is shown?"


def _config():
    config = tiny()
    config.lm = LMConfig(source="random", arch="phi3", random_config=dict(PHI3_TOY))
    config.prompt_tokenization = "official"
    return config


def _base_lm(config):
    """The base LM and tokenizer ``load_model`` starts from (same seed, same first draw)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_language_model(
            config.lm,
            dtype=torch.float32,
            special_tokens=PROMPT_STYLES[config.prompt].special_tokens,
        )


def _fill(root: torch.nn.Module, seed: int) -> None:
    """'Trained' H-LoRA and projector weights (lora_B non-zero, so plugins matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in root.named_parameters():
            if "lora_" in name or "mm_projector" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _plugin_file(root: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in root.state_dict().items() if "lora_" in k or "mm_projector" in k
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The official com / gen models and the three files saved from them."""
    config = _config()
    lm, tok = _base_lm(config)
    add_special_tokens_and_resize_model(tok, lm, config.vq.n_embed)
    clip_hidden = 32  # TINY_CLIP hidden_size
    plugins = config.plugins
    com = official_model(copy.deepcopy(lm), plugins[COMPREHENSION].r, plugins[COMPREHENSION].alpha,
                         plugins[COMPREHENSION].num_experts, clip_hidden)  # fmt: skip
    gen = official_model(copy.deepcopy(lm), plugins[GENERATION].r, plugins[GENERATION].alpha,
                         plugins[GENERATION].num_experts, clip_hidden)  # fmt: skip
    _fill(com, 1)
    _fill(gen, 2)
    # The fusion file: gen_infer.py loads it over the whole embedding and head. Change some
    # text rows, all image-token rows (trained), and leave the rest equal to the base.
    embed = lm.get_input_embeddings().weight.detach().clone()
    head = lm.get_output_embeddings().weight.detach().clone()
    g = torch.Generator().manual_seed(3)
    changed = list(range(3, 130)) + list(range(len(tok) - config.vq.n_embed - 3, len(tok)))
    embed[changed] += torch.randn(len(changed), embed.shape[1], generator=g)
    head[changed[::2]] += torch.randn(len(changed[::2]), head.shape[1], generator=g)
    fusion = {
        "base_model.model.model.embed_tokens.weight": embed,
        "base_model.model.lm_head.weight": head,
    }
    with torch.no_grad():  # what load_weights(model, hlora_path, fusion_layer_path) does
        gen.base_model.model.get_input_embeddings().weight.copy_(embed)
        gen.base_model.model.get_output_embeddings().weight.copy_(head)
    root = tmp_path_factory.mktemp("release")
    files = {
        COMPREHENSION: root / "com_hlora_weights.bin",
        GENERATION: root / "gen_hlora_weights.bin",
        "fusion": root / "fusion_layer_weights.bin",
    }
    torch.save(_plugin_file(com), files[COMPREHENSION])
    torch.save(_plugin_file(gen), files[GENERATION])
    torch.save(fusion, files["fusion"])
    return {"com": com, "gen": gen, "files": files, "changed": len(changed) * 3 // 2}


def _load(files, **kwargs):
    config = _config()
    config.official_weights = OfficialWeights(**{k: str(v) for k, v in files.items()})
    return load_model(config, device="cpu", dtype=torch.float32, **kwargs).eval()


def _double(model, release):
    """Both sides in float64, so the comparison is exact up to rounding, not fp32 noise."""
    model.double()
    release["com"].double()
    release["gen"].double()


def _collapse(ids: list[int]) -> list[int]:
    """The official ids: one IMAGE_TOKEN_INDEX where ours hold one position per patch."""
    return [t for i, t in enumerate(ids) if t != IMAGE_TOKEN_ID or ids[i - 1] != IMAGE_TOKEN_ID]


@torch.no_grad()
def _ours(model, family, ids, pixels):
    with model.active_plugin(family):
        embeds = model.embed(ids[None], pixels, family)
        return model.lm(inputs_embeds=embeds).logits[0]


def test_released_files_give_the_official_logits_per_family(release, image):
    model = _load(release["files"])
    _double(model, release)
    reports = model.load_reports
    assert all(reports[k].ok for k in (COMPREHENSION, GENERATION, "fusion"))
    assert "sha256" in reports["fusion"].source and reports["vq"].source == "random (dry run)"
    # Only the rows the fusion file changed are kept for the generation family.
    assert reports["fusion"].rows_kept < 2 * model.lm.get_input_embeddings().num_embeddings
    pixels = model.preprocess_image(image)[None].double()
    codes = model.image_vocab.codes_to_ids(torch.tensor([[5, 200], [17, 3]]))
    for family, official in ((COMPREHENSION, release["com"]), (GENERATION, release["gen"])):
        ours_ids = model.formatter.official_prompt(QUESTION, "<start_index>")
        ours_ids = torch.cat([ours_ids, torch.tensor(codes[1:])])
        official_ids = _collapse(ours_ids.tolist())
        select = model.vision.select_layers[family]
        expected = official_logits(official, model.vision.tower, select, official_ids, pixels)
        got = _ours(model, family, ours_ids, pixels)
        # The official splice puts the n patch features where its one index is: same length.
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # Cached decoding (what generation runs) picks the official greedy tokens too.
    for family, official in ((COMPREHENSION, release["com"]), (GENERATION, release["gen"])):
        prompt = model.formatter.official_prompt(QUESTION, "<start_index>")
        official_ids = _collapse(prompt.tolist())
        for _ in range(3):
            select = model.vision.select_layers[family]
            logits = official_logits(official, model.vision.tower, select, official_ids, pixels)
            official_ids.append(int(logits[-1].argmax()))
        with model._inference(family):
            ours = model._decode(prompt, pixels, family, 3)
        assert ours == official_ids[-3:]
    # The families really differ (plugins, projector, HVP layer and rows).
    ids = model.formatter.official_prompt(QUESTION)
    assert not torch.allclose(
        _ours(model, COMPREHENSION, ids, pixels), _ours(model, GENERATION, ids, pixels)
    )


def test_comprehension_keeps_the_base_rows_generation_the_fused(release):
    model = _load(release["files"])
    base = load_model(_config(), device="cpu", dtype=torch.float32)
    ids = torch.arange(3, 40)
    emb = model.lm.get_input_embeddings()
    with model.active_plugin(COMPREHENSION):
        torch.testing.assert_close(emb(ids), base.lm.get_input_embeddings()(ids))
    fused = torch.load(release["files"]["fusion"], weights_only=True)
    with model.active_plugin(GENERATION):
        torch.testing.assert_close(
            emb(ids), fused["base_model.model.model.embed_tokens.weight"][ids]
        )


@pytest.mark.parametrize("cut", ["empty", "layer0"])
def test_incomplete_files_fail_naming_the_missing_keys(release, tmp_path, cut):
    full = torch.load(release["files"][COMPREHENSION], weights_only=True)
    kept = {} if cut == "empty" else {k: v for k, v in full.items() if ".layers.0." in k}
    path = tmp_path / "com_hlora_weights.bin"
    torch.save(kept, path)
    files = {COMPREHENSION: path}
    with pytest.raises(IncompleteWeights) as err:
        _load(files)
    missing = set(full) - set(kept)
    assert set(err.value.missing) == missing
    assert "base_model.model.model.layers.1.self_attn.qkv_proj.lora_route.weight" in str(err.value)
    assert "base_model.model.model.mm_projector.2.bias" in str(err.value)
    # Asked for explicitly, a partial load goes through and says what is missing.
    model = _load(files, allow_partial=True)
    assert set(model.load_reports[COMPREHENSION].missing) == missing


def test_an_empty_fusion_file_fails(tmp_path):
    path = tmp_path / "fusion_layer_weights.bin"
    torch.save({}, path)
    with pytest.raises(IncompleteWeights, match="embed_tokens"):
        _load({"fusion": path})


def test_a_mixed_batch_uses_each_family_rows_per_sample(release, image):
    model = _load(release["files"])
    conversation = [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": "A CT scan."}]
    pixels = model.preprocess_image(image)
    sample = model.format_conversation(conversation) | {"pixel_values": pixels}
    alone = {
        family: model(model.collate([sample | {"task_family": family}])).family_losses[family]
        for family in (COMPREHENSION, GENERATION)
    }
    mixed = model.collate(
        [sample | {"task_family": COMPREHENSION}, sample | {"task_family": GENERATION}]
    )
    out = model(mixed).family_losses
    assert out == pytest.approx(alone, rel=1e-5) and alone[COMPREHENSION] != alone[GENERATION]
