"""Each stage freezes and trains exactly the parameters the paper names (Tables 7 and 8)."""

from __future__ import annotations

import pytest

from healthgpt.train import config as C
from healthgpt.train.model_api import build_bundle
from healthgpt.train.stages import build_optimizer, freeze_for_stage, trainable_names

COMP, GEN = "comprehension", "generation"

# stage -> family -> trainable groups
TRAINS = {
    "stage1": {COMP: {C.COMP_PROJECTOR}, GEN: {C.GEN_PROJECTOR, C.HLORA_GEN}},
    "stage2": {COMP: {C.EMBEDDINGS, C.LM_HEAD}, GEN: {C.EMBEDDINGS, C.LM_HEAD}},
    "stage3": {COMP: {C.COMP_PROJECTOR, C.HLORA_COMP}, GEN: {C.GEN_PROJECTOR, C.HLORA_GEN}},
}

# (preset, stage, family) -> (LRs, global batch, schedule)
PAPER = [
    ("m3", "stage1", COMP, {C.COMP_PROJECTOR: 1e-3}, 256, "cosine"),
    ("m3", "stage1", GEN, {C.GEN_PROJECTOR: 2e-5, C.HLORA_GEN: 2e-4}, 64, "cosine"),
    ("l14", "stage1", GEN, {C.GEN_PROJECTOR: 2e-5, C.HLORA_GEN: 1e-4}, 64, "cosine"),
    ("m3", "stage2", COMP, {C.EMBEDDINGS: 2e-4, C.LM_HEAD: 2e-4}, 32, "constant"),
    ("l14", "stage2", GEN, {C.EMBEDDINGS: 2e-4, C.LM_HEAD: 2e-4}, 32, "constant"),
    ("m3", "stage3", COMP, {C.COMP_PROJECTOR: 2e-5, C.HLORA_COMP: 2e-4}, 128, "cosine"),
    ("l14", "stage3", GEN, {C.GEN_PROJECTOR: 2e-5, C.HLORA_GEN: 2e-4}, 64, "cosine"),
]


@pytest.fixture(scope="module")
def bundle():
    return build_bundle("tiny", 512, 0.05, 0, None)


@pytest.mark.parametrize("preset", C.PRESETS)
@pytest.mark.parametrize("stage", C.STAGES)
def test_stage_trains_exactly_its_groups(bundle, stage, preset):
    config = C.preset_config(stage, preset)
    assert {f: set(fam.trainable) for f, fam in config.families.items()} == TRAINS[stage]
    groups = bundle.parameter_groups()
    freeze_for_stage(bundle.model, groups, config)
    wanted = set().union(*TRAINS[stage].values())
    expected = {name for group in wanted for name in groups[group]}
    assert trainable_names(bundle.model) == expected
    frozen_groups = set(C.GROUPS) - wanted
    assert all(not p.requires_grad for g in frozen_groups for p in groups[g].values())
    assert all(not p.requires_grad for p in bundle.model.vision.parameters())


@pytest.mark.parametrize(("preset", "stage", "family", "lrs", "batch", "schedule"), PAPER)
def test_paper_hyperparameters(preset, stage, family, lrs, batch, schedule):
    config = C.preset_config(stage, preset)
    assert config.families[family].lr == lrs
    assert config.families[family].global_batch == batch
    assert config.schedule == schedule
    assert config.weight_decay == 0.0 and config.max_length == 2048
    assert (config.warmup_ratio > 0) == (stage != "stage2")


def test_optimizer_has_one_group_per_parameter_group_with_its_lr(bundle):
    config = C.preset_config("stage3", "m3")
    trainable = freeze_for_stage(bundle.model, bundle.parameter_groups(), config)
    optimizer = build_optimizer(trainable, config)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == config.trainable_groups()
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups)


def test_missing_group_is_an_error(bundle):
    groups = {k: v for k, v in bundle.parameter_groups().items() if k != C.HLORA_GEN}
    with pytest.raises(ValueError, match="hlora_generation"):
        freeze_for_stage(bundle.model, groups, C.preset_config("stage1", "m3"))
