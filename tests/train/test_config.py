"""Overrides reach every field, typos are refused, and the Dagster config mirrors the dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from healthgpt.train.config import FIELD_NAMES, StageConfig, stage_config
from healthgpt.train.schedule import family_order, lr_factor, steps_per_family
from pipelines.training import StageRunConfig, trained_model_preset


def test_overrides_nested_and_preset():
    config = stage_config(
        "stage3",
        {
            "preset": "m3",
            "max_steps": 7,
            "families": {"generation": {"lr": {"hlora_generation": 1e-3}}},
        },
    )
    assert config.preset == "m3" and config.max_steps == 7
    assert config.families["generation"].lr == {
        "generation_projector": 2e-5,
        "hlora_generation": 1e-3,
    }
    assert config.families["comprehension"].global_batch == 128


def test_family_can_be_dropped_and_unknown_keys_fail():
    assert list(stage_config("stage1", {"families": {"generation": None}}).families) == [
        "comprehension"
    ]
    with pytest.raises(KeyError, match="micro_bach"):
        stage_config("stage1", {"micro_bach": 2})
    with pytest.raises(ValueError, match="unknown parameter groups"):
        stage_config("stage1", {"families": {"comprehension": {"lr": {"vision": 1.0}}}})


def test_run_key_ignores_execution_fields_only():
    base = stage_config("stage2")
    assert (
        base.run_key() == dataclasses.replace(base, num_workers=7, threads=2, log_every=1).run_key()
    )
    assert base.run_key() != dataclasses.replace(base, seed=1).run_key()
    assert base.run_key(subset="a") != base.run_key(subset="b")


def test_dagster_config_mirrors_every_field():
    launch = {"nproc_per_node", "device", "mixture_dir"}
    assert set(StageRunConfig.model_fields) - launch == set(FIELD_NAMES) - {"stage"}
    overrides = StageRunConfig(
        max_steps=3, families={"generation": {"global_batch": 16}}
    ).overrides()
    assert overrides == {
        "preset": "cpu",
        "max_steps": 3,
        "families": {"generation": {"global_batch": 16}},
    }
    assert isinstance(stage_config("stage1", overrides), StageConfig)


def test_one_training_preset_reaches_the_stages_and_the_vq_assets(monkeypatch):
    """Left blank, the stages, the VQ tokenizer and the VQ codes take HEALTHGPT_TRAIN_PRESET:
    the codes are computed with the preprocessing the stages then look them up by."""
    assert trained_model_preset("", "") == "tiny"
    monkeypatch.setenv("HEALTHGPT_TRAIN_PRESET", "m3")
    assert StageRunConfig().overrides()["preset"] == "m3"
    assert stage_config("stage3", StageRunConfig().overrides()).model_preset == "m3"
    assert trained_model_preset("", "") == "m3"
    assert trained_model_preset("l14", "") == "l14"
    assert trained_model_preset("", "tiny") == "tiny"
    assert StageRunConfig(preset="cpu").overrides()["preset"] == "cpu"


def test_schedule_interleaves_and_decays():
    config = stage_config("stage3", {"max_steps": 0, "epochs": 1.0})
    steps = steps_per_family(config, {"comprehension": 64, "generation": 32})
    assert steps == {"comprehension": 8, "generation": 4}
    order = family_order(steps)
    assert order.count("generation") == 4 and order[:3] == [
        "comprehension",
        "generation",
        "comprehension",
    ]
    assert lr_factor(config, 0, 100) < 1.0 and lr_factor(config, 99, 100) < 0.01
    constant = stage_config("stage2")
    assert lr_factor(constant, 0, 10) == lr_factor(constant, 9, 10) == 1.0


def test_a_short_family_still_warms_up_on_its_first_step():
    config = stage_config("stage3", {"warmup_ratio": 0.05})
    for total in (1, 10, 20, 33, 100):
        assert lr_factor(config, 0, total) < 1.0, total
