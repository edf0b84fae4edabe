"""scripts/gpu_check: the real M3/L14 architectures through `load_model`, and its code path
run end to end on CPU with 2 layers and small images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from healthgpt.model import get_preset, load_model, with_random_weights

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check"
ROOT = SCRIPT.parents[1]

# The released architectures (Phi-3-mini-4k-instruct, Phi-4 config.json) and HealthGPT's
# vocabulary: the tokenizer's length plus <start_index>, 8192 codes, <end_index>, newline.
ARCHITECTURES = {
    "m3": {"hidden": 3072, "layers": 32, "heads": 32, "kv": 32, "mlp": 8192, "vocab": 40206},
    "l14": {"hidden": 5120, "layers": 40, "heads": 40, "kv": 10, "mlp": 17920, "vocab": 108547},
}


@pytest.mark.parametrize("preset", sorted(ARCHITECTURES))
def test_random_weights_build_the_released_architecture(preset):
    """Built on the meta device: every shape, no memory, no file read."""
    want = ARCHITECTURES[preset]
    with torch.device("meta"):
        model = load_model(
            with_random_weights(get_preset(preset)), device="meta", dtype=torch.bfloat16
        )
    lm = model.lm.config
    assert (lm.hidden_size, lm.num_hidden_layers) == (want["hidden"], want["layers"])
    assert (lm.num_attention_heads, lm.num_key_value_heads) == (want["heads"], want["kv"])
    assert lm.intermediate_size == want["mlp"]
    assert len(model.tokenizer) == want["vocab"] == lm.vocab_size
    assert model.lm.get_input_embeddings().weight.shape == (want["vocab"], want["hidden"])
    assert model.lm.get_output_embeddings().weight.shape == (want["vocab"], want["hidden"])
    assert model.image_vocab.first_code_id + 8192 + 2 == want["vocab"]  # codes, end, newline
    assert lm._attn_implementation == "sdpa"
    vision = model.vision.tower.config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (1024, 24, 336)
    assert model.vq.config.n_embed == 8192 and model.vq.grid_size == 32


def test_layers_keep_the_widths():
    config = with_random_weights(get_preset("m3"), layers=2)
    assert config.lm.random_config["num_hidden_layers"] == 2
    assert config.lm.random_config["hidden_size"] == 3072
    assert config.vision.random_config["num_hidden_layers"] == 2
    assert get_preset("m3").lm.source == "hf"  # the preset itself is untouched
    with pytest.raises(ValueError, match="records no architecture"):
        with_random_weights(get_preset("smollm2"))


@pytest.mark.slow
def test_cpu_run_reports_every_figure(tmp_path):
    """2 layers at M3's widths, fp32 (bf16 matmuls on a CPU without AVX512-BF16 run at well
    under 1 GFLOP/s), small images and sequences so both families fit in a minute."""
    out = tmp_path / "gpu.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--layers", "2",
        "--device", "cpu",
        "--dtype", "fp32",
        "--seq-len", "128",
        "--image-size", "28",
        "--micro-batch", "2",
        "--repeats", "1",
        "--warmup", "0",
        "--num-workers", "0",
        "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one JSON line; progress goes to stderr
    result = json.loads(lines[0])
    assert result == json.loads(out.read_text())
    assert (result["preset"], result["layers"], result["hidden_size"]) == ("m3", 2, 3072)
    assert result["vocab_size"] == 40206 and result["attention"] == "sdpa"
    assert result["families"] == ["comprehension", "generation"]
    for key in (
        "tokens_per_second",
        "peak_memory_bytes",
        "step_seconds_hlora",
        "step_seconds_lora",
        "hlora_over_lora",
        "vq_images_per_second",
        "loader_samples_per_second",
        "lm_flops_per_token",
    ):
        assert result[key] > 0, key
    assert 0 <= result["padding_fraction"] < 1
    assert result["mfu"] is None and result["peak_flops_per_second"] is None  # no CPU peak
    assert set(result["load_before"]) == {"load_1m", "load_5m", "load_15m", "cpus"}
    assert "steps/s" in done.stderr or "runs/s" in done.stderr  # progress lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_gpu_exits_with_a_clear_message():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stdout
