import json

import pytest

from healthgpt.eval.models import (
    ModelSpec,
    ModelUnavailable,
    checkpoint_file,
    load_healthgpt,
    official_files,
    resolve_checkpoint,
)


def test_resolve_checkpoint_prefers_current_then_highest_step(tmp_path):
    assert resolve_checkpoint(tmp_path, "stage3") is None
    stage = tmp_path / "stage3"
    (stage / "ckpt-2").mkdir(parents=True)
    (stage / "ckpt-10").mkdir()
    assert resolve_checkpoint(tmp_path, "stage3").name == "ckpt-10"
    (stage / "CURRENT.json").write_text(json.dumps({"final": str(stage / "runs" / "r" / "final")}))
    assert resolve_checkpoint(tmp_path, "stage3") == stage / "runs" / "r" / "final"


def test_checkpoint_file_in_a_directory(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert checkpoint_file(tmp_path).name == "model.safetensors"
    with pytest.raises(ModelUnavailable, match="no safetensors"):
        checkpoint_file(tmp_path / "empty")


def test_official_release_files_by_family(tmp_path):
    for name in ("com_hlora_weights_phi4.bin", "fusion_layer_weights.bin", "README.md"):
        (tmp_path / name).write_bytes(b"")
    found = official_files(tmp_path)
    assert set(found) == {"comprehension", "fusion"}
    assert found["comprehension"].endswith("com_hlora_weights_phi4.bin")
    with pytest.raises(ModelUnavailable, match="com_hlora_weights"):
        official_files(tmp_path / "nothing")


def test_no_checkpoint_and_no_official_weights_is_refused():
    with pytest.raises(ModelUnavailable, match="train_stage3"):
        load_healthgpt(ModelSpec())
    assert ModelSpec(checkpoint="/x/final").label == "checkpoint final"


def _real_like_preset(monkeypatch):
    """The tiny preset marked as needing a trained VQGAN, as m3 and l14 are."""
    from dataclasses import replace

    from healthgpt.model import presets

    monkeypatch.setitem(
        presets.PRESETS, "tiny_real", lambda: replace(presets.tiny(), requires_trained_vq=True)
    )


def test_generation_with_a_random_vqgan_needs_a_dry_run(monkeypatch, tmp_path):
    from healthgpt.eval.models import image_model, text_model
    from healthgpt.model import load_model, save_trainable

    _real_like_preset(monkeypatch)
    file = save_trainable(load_model("tiny", device="cpu"), tmp_path / "model.safetensors").path
    spec = ModelSpec(preset="tiny_real", checkpoint=str(file))
    with pytest.raises(ModelUnavailable, match="dry run"):
        image_model(spec)
    assert "VQ weights: random (dry run)" in text_model(spec).notes  # comprehension is fine
    dry = image_model(ModelSpec(preset="tiny_real", checkpoint=str(file), vq_dry_run=True))
    assert dry.notes[-1] == "VQ weights: random (dry run)"
