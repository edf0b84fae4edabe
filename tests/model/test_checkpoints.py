"""Saving/loading the trainable parts; mapping the official HealthGPT weight files."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from healthgpt.model import load_model, load_official_weights, load_trainable, save_trainable
from healthgpt.model.presets import LMConfig, tiny
from healthgpt.model.weights import part_names, trainable_state_dict


def _perturb(model) -> None:
    with torch.no_grad():
        for name in part_names(model):
            model.get_parameter(name).normal_()


@pytest.mark.parametrize(
    "parts",
    [("plugins", "projectors", "embeddings"), ("plugins",), ("projectors", "embeddings")],
)
def test_save_load_round_trip(tmp_path, parts):
    source = load_model("tiny", device="cpu")
    _perturb(source)
    saved = save_trainable(source, tmp_path / "ckpt" / "stage.safetensors", parts=parts)
    assert saved.path.is_file() and saved.num_bytes == saved.path.stat().st_size
    assert len(saved.sha256) == 64
    expected = trainable_state_dict(source, parts)
    assert saved.num_tensors == len(expected)
    with safe_open(str(saved.path), "pt") as f:
        assert f.metadata()["parts"] == ",".join(parts)

    target = load_model("tiny", device="cpu")
    report = load_trainable(target, saved.path)
    assert report.ok and sorted(report.loaded) == sorted(expected)
    got = dict(target.named_parameters())
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor)
    untouched = set(trainable_state_dict(target)) - set(expected)
    fresh = dict(load_model("tiny", device="cpu").named_parameters())
    for name in untouched:
        torch.testing.assert_close(got[name], fresh[name])
    assert not list(tmp_path.glob("ckpt/.*.tmp"))  # the atomic write left nothing behind


def test_save_is_byte_identical_for_equal_contents(tiny_model, tmp_path):
    """safetensors writes metadata in hash-map order; save_trainable sorts it, so the same
    weights and metadata always give the same bytes (and sha256)."""
    metadata = {f"key{i}": str(i) for i in range(8)}
    hashes = {
        save_trainable(tiny_model, tmp_path / f"{i}.safetensors", metadata=metadata).sha256
        for i in range(6)
    }
    assert len(hashes) == 1
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata()["key7"] == "7" and f.metadata()["preset"] == "tiny"
    assert load_trainable(load_model("tiny", device="cpu"), tmp_path / "0.safetensors").ok


def test_strict_load_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"not.a.param": torch.zeros(2)}, tmp_path / "x.safetensors", metadata={"parts": "plugins"}
    )
    model = load_model("tiny", device="cpu")
    with pytest.raises(ValueError, match="not a trainable"):
        load_trainable(model, tmp_path / "x.safetensors")
    report = load_trainable(model, tmp_path / "x.safetensors", strict=False)
    assert "not.a.param" in report.unmapped and report.missing


# Phi-3 (the M3 base) at toy size, so the official key names are the real ones.
PHI3_TOY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


def _official_hlora_state(family_r: int, k: int, clip_dim: int, hidden: int):
    """A state dict with the layout of com_/gen_hlora_weights.bin (written from the naming,
    not from our model): per adapted Phi-3 linear lora_A [r, in], lora_B [out, r],
    lora_route [k, in]; mm_projector.{0,2}."""
    g = torch.Generator().manual_seed(0)
    shapes = {  # module -> (in, out)
        "self_attn.qkv_proj": (hidden, 3 * hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_up_proj": (hidden, 2 * 64),
        "mlp.down_proj": (64, hidden),
    }
    state = {}
    for layer in range(2):
        for module, (d_in, d_out) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(family_r, d_in, generator=g)
            state[f"{key}.lora_B.weight"] = torch.randn(d_out, family_r, generator=g)
            state[f"{key}.lora_route.weight"] = torch.randn(k, d_in, generator=g)
    state["base_model.model.model.mm_projector.0.weight"] = torch.randn(
        hidden, clip_dim, generator=g
    )
    state["base_model.model.model.mm_projector.0.bias"] = torch.randn(hidden, generator=g)
    state["base_model.model.model.mm_projector.2.weight"] = torch.randn(hidden, hidden, generator=g)
    state["base_model.model.model.mm_projector.2.bias"] = torch.randn(hidden, generator=g)
    return state


@pytest.fixture(scope="module")
def phi3_model():
    config = tiny()
    config.lm = LMConfig(source="random", arch="phi3", random_config=dict(PHI3_TOY))
    return load_model(config, device="cpu")


@pytest.mark.parametrize("family", ["comprehension", "generation"])
def test_official_hlora_keys_map_onto_the_model(phi3_model, family, tmp_path):
    cfg = phi3_model.config.plugins[family]
    state = _official_hlora_state(cfg.r, cfg.num_experts, phi3_model.vision.hidden_size, 32)
    # Keys a real file may also hold, which must be reported, not silently dropped.
    tower_key = (
        "base_model.model.model.vision_tower.vision_tower.vision_model.post_layernorm.weight"
    )
    extra = {
        "base_model.model.model.layers.0.self_attn.qkv_proj.weight": torch.zeros(96, 32),
        tower_key: torch.zeros(32),
        "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight_renamed": torch.zeros(1),
    }
    bad_shape = {
        "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight": torch.zeros(3, 3)
    }
    path = tmp_path / (
        "com_hlora_weights.bin" if family == "comprehension" else "gen_hlora_weights.bin"
    )
    torch.save(state | extra | bad_shape, path)

    report = load_official_weights(phi3_model, path)  # family from the file name
    assert set(report.unmapped) == set(extra) | set(bad_shape)
    assert "shape" in report.unmapped[next(iter(bad_shape))]
    assert len(report.loaded) == len(state) - 1  # the mis-shaped key replaced a good one
    params = dict(phi3_model.named_parameters())
    a = params[f"lm.model.layers.0.self_attn.qkv_proj.plugins.{family}.lora_A.weight"]
    torch.testing.assert_close(
        a, state["base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"]
    )
    route = params[f"lm.model.layers.1.mlp.gate_up_proj.plugins.{family}.lora_route.weight"]
    torch.testing.assert_close(
        route, state["base_model.model.model.layers.1.mlp.gate_up_proj.lora_route.weight"]
    )
    proj = params[f"projectors.{family}.2.bias"]
    torch.testing.assert_close(proj, state["base_model.model.model.mm_projector.2.bias"])


def test_official_fusion_file_and_unknown_family(phi3_model):
    vocab = phi3_model.lm.get_input_embeddings().num_embeddings
    fusion = {
        "base_model.model.model.embed_tokens.weight": torch.randn(vocab, 32),
        "base_model.model.lm_head.weight": torch.randn(vocab, 32),
    }
    base_head = phi3_model.lm.get_output_embeddings().weight.clone()
    report = load_official_weights(phi3_model, fusion)
    assert report.ok and len(report.loaded) == 2
    # The fused rows are the generation family's; the base (comprehension) rows stay.
    head = phi3_model.lm.get_output_embeddings()
    torch.testing.assert_close(head.weight, base_head)
    torch.testing.assert_close(
        head.families["generation"].rows, fusion["base_model.model.lm_head.weight"]
    )
    # A plugin key without a family cannot be placed: reported.
    orphan = {"base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight": torch.zeros(8, 32)}
    assert "family" in load_official_weights(phi3_model, orphan).unmapped[next(iter(orphan))]


def test_tied_head_is_reported():
    config = tiny()
    config.lm = replace(
        config.lm, random_config=config.lm.random_config | {"tie_word_embeddings": True}
    )
    model = load_model(config, device="cpu")
    vocab, hidden = model.lm.get_input_embeddings().weight.shape
    report = load_official_weights(
        model, {"base_model.model.lm_head.weight": torch.zeros(vocab, hidden)}
    )
    assert "tied" in report.unmapped["base_model.model.lm_head.weight"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v: torch.empty(v, 32, device="meta"), "is a meta tensor"),
        (lambda v: torch.zeros(v, 32, dtype=torch.int64), "dtype torch.int64, not floating"),
        (lambda v: torch.full((v, 32), float("nan")), "NaN or infinite"),
        (lambda v: torch.zeros(v, 32).index_fill_(0, torch.tensor([3]), float("inf")), "NaN"),
    ],
)
def test_unusable_official_tensors_are_refused_with_the_file_named(
    phi3_model, tmp_path, make, message
):
    """A tensor of the right shape must also hold usable weights: data (not meta), floating
    point, finite. Checked from the file, before anything is copied into the model."""
    from healthgpt.model.vq import CheckpointRefused

    vocab = phi3_model.lm.get_input_embeddings().num_embeddings
    fusion = tmp_path / "fusion_layer_weights.bin"
    torch.save({"base_model.model.model.embed_tokens.weight": make(vocab)}, fusion)
    with pytest.raises(CheckpointRefused, match=f"fusion_layer_weights.bin: .*{message}"):
        load_official_weights(phi3_model, fusion)
    plugin = tmp_path / "com_hlora_weights.bin"
    r = phi3_model.config.plugins["comprehension"].r
    key = "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"
    torch.save({key: make(r)}, plugin)
    with pytest.raises(CheckpointRefused, match=f"com_hlora_weights.bin: refused: {key} "):
        load_official_weights(phi3_model, plugin)


def test_family_rows_refuse_an_unusable_table(phi3_model):
    from healthgpt.model.family_rows import set_family_rows

    table = phi3_model.lm.get_input_embeddings().weight.detach()
    with pytest.raises(ValueError, match="generation head table has dtype torch.int64"):
        set_family_rows(phi3_model.lm, "generation", table, table.long())


def test_a_truncated_official_file_is_refused_with_its_name(tmp_path):
    from healthgpt.model.vq import CheckpointRefused

    path = tmp_path / "gen_hlora_weights.bin"
    torch.save({"a": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointRefused, match="gen_hlora_weights.bin: refused: not a readable"):
        load_official_weights(None, path)  # type: ignore[arg-type]
