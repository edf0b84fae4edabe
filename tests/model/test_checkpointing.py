"""Gradient checkpointing with H-LoRA: the recomputation in backward runs the forward's plugins.

The plugin is chosen by a route that lives only as long as the forward; checkpointing
recomputes each decoder layer inside backward, after the route has ended (or while another
one is active). The gradients must equal those of the same step without checkpointing, for
each family and for mixed batches, with dropout on.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from healthgpt.model import COMPREHENSION, GENERATION, load_model
from healthgpt.model.hlora import (
    HLoRAConfig,
    checkpoint_context,
    inject_hlora,
    plugin_parameters,
    route,
)
from tests.model.test_hlora import _tiny_lm
from tests.model.test_model import _samples


def _model(checkpointing: bool, dtype: torch.dtype = torch.float32):
    model = load_model("tiny", device="cpu", dtype=dtype)
    model.set_trainable(plugins=True, projectors=True, embeddings=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B: a fresh plugin is a no-op and would hide a wrong one
        for param in model.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            param.data = param.data.float()
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def _gradients(model, samples, seed: int = 0):
    torch.manual_seed(seed)  # the same dropout masks in both runs
    out = model(model.collate(samples))
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


@pytest.mark.parametrize("families", ["comprehension", "generation", "mixed"])
def test_checkpointed_gradients_equal_plain(image, families):
    plain, checkpointed = _model(False), _model(True)
    com, gen = _samples(plain, image)
    samples = {"comprehension": [com, com], "generation": [gen, gen], "mixed": [com, gen, com]}
    assert any(layer.gradient_checkpointing for layer in checkpointed.lm.model.layers)
    loss, expected = _gradients(plain, samples[families])
    loss_ckpt, got = _gradients(checkpointed, samples[families])
    torch.testing.assert_close(loss_ckpt, loss)
    assert got.keys() == expected.keys()
    trained = {COMPREHENSION, GENERATION} if families == "mixed" else {families}
    for family in (COMPREHENSION, GENERATION):
        plugin_grads = [p.grad for p in plugin_parameters(checkpointed.lm, family)]
        assert all((g is not None) == (family in trained) for g in plugin_grads), family
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointed_bf16_base_with_fp32_master_weights(image):
    """The GPU configuration: bf16 base, fp32 trainable parts, autocast, checkpointing."""
    plain, checkpointed = (_model(c, torch.bfloat16) for c in (False, True))
    com, gen = _samples(plain, image)
    _, expected = _gradients(plain, [com, gen])
    _, got = _gradients(checkpointed, [com, gen])
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], grad, rtol=1e-2, atol=1e-3, msg=name)


def _same_rank_lm():
    """Two plugins of the same shape: recomputing with the wrong one raises nothing."""
    torch.manual_seed(0)
    lm = _tiny_lm(LlamaConfig)
    lm.requires_grad_(False)
    inject_hlora(lm, {"com": HLoRAConfig(4, 8, 2, 0.2), "gen": HLoRAConfig(4, 8, 2, 0.2)})
    with torch.no_grad():
        for p in plugin_parameters(lm):
            p.normal_(0, 0.5)
            p.requires_grad_(True)
    return lm.train()


def _plugin_grads(lm, ids, *, checkpointing: bool) -> dict[str, torch.Tensor]:
    if checkpointing:
        kwargs = {"use_reentrant": False, "context_fn": checkpoint_context}
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    lm.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    with route("com"):
        loss = lm(input_ids=ids, labels=ids, use_cache=False).loss
    with route("gen"):  # another plugin is active when backward recomputes
        loss.backward()
    return {n: p.grad for n, p in lm.named_parameters() if p.grad is not None}


def test_recompute_uses_the_forwards_plugin_not_the_current_one():
    ids = torch.randint(3, 40, (2, 7))
    expected = _plugin_grads(_same_rank_lm(), ids, checkpointing=False)
    got = _plugin_grads(_same_rank_lm(), ids, checkpointing=True)
    assert expected and all(".plugins.com." in n for n in expected)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, msg=name)


def test_route_ends_with_its_block():
    lm = _same_rank_lm().eval()
    ids = torch.randint(3, 40, (1, 5))
    with torch.no_grad():
        base = lm(input_ids=ids).logits
        with route("gen"):
            gen = lm(input_ids=ids).logits
            with route(None):
                torch.testing.assert_close(lm(input_ids=ids).logits, base)
        torch.testing.assert_close(lm(input_ids=ids).logits, base)
    assert not torch.allclose(gen, base)
