"""H-LoRA layer: equivalences (peft LoRA, explicit expert sum), gradients, plugin switching."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, Phi3Config, Qwen2Config

from healthgpt.model.hlora import (
    HLoRAConfig,
    HLoRALinear,
    HLoRAPlugin,
    _HLoRAFunction,
    active_plugin,
    find_target_linears,
    get_active_plugin,
    inject_hlora,
    plugin_parameters,
    set_active_plugin,
)


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Non-zero B (a fresh plugin is an exact no-op, which would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


class _Wrapped(nn.Module):
    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize(
    ("d_in", "d_out", "r", "alpha"), [(8, 6, 4, 8), (16, 32, 8, 32), (5, 7, 2, 1)]
)
def test_single_expert_equals_peft_lora(d_in, d_out, r, alpha):
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out)
    peft_model = get_peft_model(
        _Wrapped(nn.Linear(d_in, d_out)),
        LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], lora_dropout=0.0),
    )
    ours = HLoRALinear(base, {"task": HLoRAConfig(r=r, alpha=alpha, num_experts=1, dropout=0.0)})
    _randomize(ours.plugins["task"])
    layer = peft_model.base_model.model.lin
    with torch.no_grad():
        layer.base_layer.weight.copy_(base.weight)
        layer.base_layer.bias.copy_(base.bias)
        layer.lora_A["default"].weight.copy_(ours.plugins["task"].lora_A.weight)
        layer.lora_B["default"].weight.copy_(ours.plugins["task"].lora_B.weight)
    ours.active_plugin = "task"
    x = torch.randn(3, 5, d_in)
    expected = peft_model(x)
    assert not torch.allclose(expected, base(x), atol=1e-3)  # the adapter does something
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


def _explicit_expert_sum(plugin: HLoRAPlugin, x: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * scale * B_i A_i x, with expert i's rows/columns sliced out of A and B."""
    cfg = plugin.config
    per = cfg.r // cfg.num_experts
    w = torch.softmax(x @ plugin.lora_route.weight.t(), dim=-1)
    out = 0
    for i in range(cfg.num_experts):
        a = plugin.lora_A.weight[i * per : (i + 1) * per]
        b = plugin.lora_B.weight[:, i * per : (i + 1) * per]
        out = out + w[..., i : i + 1] * cfg.scale * ((x @ a.t()) @ b.t())
    return out


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_concatenated_experts_equal_explicit_sum(k):
    torch.manual_seed(k)
    plugin = HLoRAPlugin(12, 10, HLoRAConfig(r=16, alpha=8, num_experts=k, dropout=0.0)).double()
    _randomize(plugin, seed=k)
    x = torch.randn(2, 7, 12, dtype=torch.float64, requires_grad=True)
    fast, reference = plugin(x), _explicit_expert_sum(plugin, x)
    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(plugin.forward_reference(x), reference)
    # The hand-written backward matches autograd on the explicit sum.
    g = torch.randn_like(fast)
    inputs = [x, plugin.lora_A.weight, plugin.lora_route.weight, plugin.lora_B.weight]
    for got, want in zip(
        torch.autograd.grad(fast, inputs, g), torch.autograd.grad(reference, inputs, g), strict=True
    ):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("k", "dropout"), [(1, 0.0), (4, 0.0), (4, 0.3)])
def test_custom_backward_gradcheck(k, dropout):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    weights = [
        torch.randn(shape, dtype=torch.float64, requires_grad=True)
        for shape in [(8, 6), (k, 6), (5, 8)]
    ]

    def f(*args):
        torch.manual_seed(1)  # the same dropout mask on every evaluation
        return _HLoRAFunction.apply(*args, 2.0, dropout, True)

    assert torch.autograd.gradcheck(f, (x, *weights))


def test_dropout_only_in_training():
    plugin = HLoRAPlugin(8, 8, HLoRAConfig(r=4, alpha=8, num_experts=2, dropout=0.5))
    _randomize(plugin)
    x = torch.randn(4, 8)
    plugin.eval()
    torch.testing.assert_close(plugin(x), plugin.forward_reference(x))
    plugin.train()
    assert not torch.allclose(plugin(x), plugin.forward_reference(x))


def test_fresh_plugin_is_a_no_op():
    base = nn.Linear(8, 8)
    layer = HLoRALinear(base, {"a": HLoRAConfig(r=4, alpha=8, num_experts=2)})
    layer.active_plugin = "a"
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), base(x))


@pytest.mark.parametrize(("r", "k"), [(6, 4), (0, 1), (4, 0)])
def test_rank_must_split_into_experts(r, k):
    with pytest.raises(ValueError):
        HLoRAConfig(r=r, alpha=1, num_experts=k)


def _tiny_lm(config_cls):
    config = config_cls(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize(
    ("config_cls", "per_layer"),
    [
        (
            LlamaConfig,
            {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        ),
        (Phi3Config, {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}),
        (
            Qwen2Config,
            {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        ),
    ],
)
def test_targets_are_every_linear_but_the_head(config_cls, per_layer):
    lm = _tiny_lm(config_cls)
    targets = find_target_linears(lm)
    assert {t.rsplit(".", 1)[1] for t in targets} == per_layer
    assert len(targets) == 2 * len(per_layer)
    assert "lm_head" not in targets
    inject_hlora(lm, {"a": HLoRAConfig(4, 8, 2)})
    assert all(isinstance(lm.get_submodule(t), HLoRALinear) for t in targets)
    assert type(lm.lm_head) is nn.Linear


def _two_plugin_lm():
    torch.manual_seed(0)
    lm = _tiny_lm(LlamaConfig)
    lm.requires_grad_(False)
    inject_hlora(lm, {"com": HLoRAConfig(4, 8, 2, 0.0), "gen": HLoRAConfig(8, 16, 4, 0.0)})
    for name in ("com", "gen"):
        for p in plugin_parameters(lm, name):
            p.requires_grad_(True)
        with torch.no_grad():
            for p in plugin_parameters(lm, name):
                p.normal_(0, 0.5)
    return lm


def test_only_the_active_plugin_gets_gradients():
    lm = _two_plugin_lm()
    ids = torch.randint(3, 50, (2, 6))
    for active, inactive in [("com", "gen"), ("gen", "com")]:
        lm.zero_grad(set_to_none=True)
        with active_plugin(lm, active):
            lm(input_ids=ids, labels=ids).loss.backward()
        assert all(
            p.grad is not None and p.grad.abs().sum() > 0 for p in plugin_parameters(lm, active)
        )
        assert all(p.grad is None for p in plugin_parameters(lm, inactive))
        assert all(p.grad is None for n, p in lm.named_parameters() if ".plugins." not in n)


def test_switching_plugins_between_batches_without_reload():
    lm = _two_plugin_lm().eval()
    ids = torch.randint(3, 50, (2, 6))

    def logits(family):
        set_active_plugin(lm, family)
        with torch.no_grad():
            return lm(input_ids=ids).logits

    base, com, gen = logits(None), logits("com"), logits("gen")
    assert not torch.allclose(com, gen) and not torch.allclose(com, base)
    torch.testing.assert_close(logits("com"), com)  # back and forth, same weights
    torch.testing.assert_close(logits(None), base)
    with active_plugin(lm, "gen"):
        assert get_active_plugin(lm) == "gen"
    assert get_active_plugin(lm) is None
    with pytest.raises(KeyError):
        set_active_plugin(lm, "nope")


def test_bf16_plugin_matches_fp32():
    """The GPU presets run in bf16: same result within bf16 precision, fp32 router softmax."""
    plugin = HLoRAPlugin(32, 24, HLoRAConfig(r=16, alpha=32, num_experts=4, dropout=0.0))
    _randomize(plugin)
    x = torch.randn(2, 9, 32)
    expected = plugin(x)
    half = HLoRAPlugin(32, 24, plugin.config, dtype=torch.bfloat16)
    half.load_state_dict(plugin.state_dict())
    xb = x.bfloat16().requires_grad_(True)
    got = half(xb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(
        got.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item()
    )
    got.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and half.lora_route.weight.grad.dtype == torch.bfloat16
