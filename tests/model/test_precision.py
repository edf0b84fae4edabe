"""One precision policy: a bf16 base with fp32 trainable (master) weights trains, validates and
generates, because every pass of the model runs under autocast in the model's dtype."""

from __future__ import annotations

import torch

from healthgpt.model import load_model
from tests.model.test_model import _samples


def _master_weights(model):
    model.set_trainable(plugins=True, projectors=True, embeddings=True)
    for param in model.trainable_parameters():
        param.data = param.data.float()
    return model


def test_bf16_base_with_fp32_master_weights_trains_and_generates(image):
    model = _master_weights(load_model("tiny", device="cpu", dtype=torch.bfloat16))
    reference = _master_weights(load_model("tiny", device="cpu"))
    assert model.autocast_dtype == torch.bfloat16 and reference.autocast_dtype is None
    assert model.lm.model.layers[0].mlp.down_proj.base_layer.weight.dtype == torch.bfloat16
    assert model.lm.get_input_embeddings().weight.dtype == torch.float32  # a master weight

    model.eval(), reference.eval()
    batch = model.collate(list(_samples(model, image)))
    out = model(batch)
    expected = reference(reference.collate(list(_samples(reference, image))))
    torch.testing.assert_close(out.loss, expected.loss, rtol=0.02, atol=0.0)
    out.loss.backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)

    # Held-out evaluation of stage 2 generates text with exactly these weights.
    assert isinstance(model.generate_text(image, "What is shown?", max_new_tokens=3), str)
    picture = model.generate_image(image, "Convert this CT slice to MRI.")
    assert picture.size == (model.vq.config.resolution,) * 2
    assert not torch.is_autocast_enabled("cpu"), "autocast ends with the call"


def test_fp32_model_runs_without_autocast(tiny_model, image):
    assert tiny_model.autocast_dtype is None
    seen = []
    hook = tiny_model.lm.model.layers[0].register_forward_hook(
        lambda *_: seen.append(torch.is_autocast_enabled("cpu"))
    )
    try:
        tiny_model.generate_text(image, "What?", max_new_tokens=1)
    finally:
        hook.remove()
    assert seen and not any(seen)
