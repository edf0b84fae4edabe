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
    assert dry.checkpoint == str(file)  # what scores.json records for the model card


def test_the_answer_budget_is_the_models_own_unless_given(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from healthgpt.eval.models import DEMO_MAX_NEW_TOKENS, default_max_new_tokens, text_model
    from healthgpt.model import get_preset, load_model, save_trainable
    from healthgpt.model.healthgpt import COM_MAX_NEW_TOKENS

    for preset, budget in (("m3", COM_MAX_NEW_TOKENS), ("l14", COM_MAX_NEW_TOKENS)):
        assert default_max_new_tokens(SimpleNamespace(config=get_preset(preset))) == budget
    file = save_trainable(load_model("tiny", device="cpu"), tmp_path / "model.safetensors").path
    assert text_model(ModelSpec(checkpoint=str(file))).max_new_tokens == DEMO_MAX_NEW_TOKENS
    assert text_model(ModelSpec(checkpoint=str(file), max_new_tokens=3)).max_new_tokens == 3


def test_official_spec_sets_base_model_and_vq_files_on_the_preset(monkeypatch, tmp_path):
    import healthgpt.model

    (tmp_path / "com_hlora_weights.bin").write_bytes(b"")
    seen = []

    def load_model(config, **kwargs):
        seen.append((config, kwargs))
        raise RuntimeError("captured")

    monkeypatch.setattr(healthgpt.model, "load_model", load_model)
    spec = ModelSpec(
        preset="m3",
        official_dir=str(tmp_path),
        base_model="/models/phi3",
        vq_path="/vq/last.ckpt",
        vq_sha256="a" * 64,
        vq_yaml_path="/vq/model.yaml",
        vq_yaml_sha256="b" * 64,
        vq_dry_run=True,
    )
    with pytest.raises(RuntimeError, match="captured"):
        load_healthgpt(spec)
    ((config, kwargs),) = seen
    assert config.lm.name_or_path == "/models/phi3"
    assert (config.vq.ckpt_path, config.vq.ckpt_sha256) == ("/vq/last.ckpt", "a" * 64)
    assert (config.vq.yaml_path, config.vq.yaml_sha256) == ("/vq/model.yaml", "b" * 64)
    assert config.official_weights.comprehension.endswith("com_hlora_weights.bin")
    assert kwargs == {"allow_partial": False, "vq_dry_run": True}


def test_evaluation_config_passes_only_the_model_fields_it_sets(tmp_path):
    from pipelines.evaluation import GenerationEvalConfig, TextEvalConfig

    unset = TextEvalConfig(official_weights_dir=str(tmp_path)).model_spec(tmp_path)
    assert unset.max_new_tokens is None  # the model's own: COM_MAX_NEW_TOKENS for m3
    assert (unset.vq_path, unset.vq_sha256, unset.vq_dry_run) == (None, None, False)
    given = GenerationEvalConfig(
        official_weights_dir=str(tmp_path),
        max_new_tokens=7,
        vq_path="/vq/last.ckpt",
        vq_sha256="a" * 64,
        vq_yaml_path="/vq/model.yaml",
        vq_yaml_sha256="b" * 64,
        vq_dry_run=True,
        allow_partial_weights=True,
    ).model_spec(tmp_path)
    assert given.max_new_tokens == 7 and given.official_dir == str(tmp_path)
    assert (given.vq_path, given.vq_sha256) == ("/vq/last.ckpt", "a" * 64)
    assert (given.vq_yaml_path, given.vq_yaml_sha256) == ("/vq/model.yaml", "b" * 64)
    assert given.vq_dry_run and given.allow_partial_weights
