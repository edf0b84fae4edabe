"""The stage asset launches the entry point under torchrun through Pipes and gets metrics back."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from healthgpt.eval.models import ModelSpec, load_healthgpt, resolve_checkpoint
from healthgpt.train.run import current_final
from pipelines.resources import DataLocations
from pipelines.training import train_stage1, training_assets

# Raised inside Dagster's own Pipes session code, not by this project.
pytestmark = [
    pytest.mark.filterwarnings("ignore:AssetExecutionContext.run_id is deprecated"),
    pytest.mark.filterwarnings("ignore::dagster.PreviewWarning"),
]

OVERRIDES = {"max_steps": 4, "eval_samples": 4, "max_new_tokens": 2, "num_workers": 0}


def test_materialize_stage1_reports_metrics_through_pipes(tmp_path: Path, mixture_dir, vq_dir):
    data = tmp_path / "data"
    instance = dg.DagsterInstance.ephemeral()
    shutil.copytree(vq_dir, data / "checkpoints" / "vq_tokenizer")
    result = dg.materialize(
        [train_stage1],
        resources={
            "locations": DataLocations(data_dir=str(data)),
            "training_pipes": dg.PipesSubprocessClient(),
        },
        instance=instance,
        run_config={
            "ops": {"train_stage1": {"config": {**OVERRIDES, "mixture_dir": str(mixture_dir)}}}
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("train_stage1")[0].metadata
    assert metadata["steps"].value == 4
    assert metadata["tokens_per_second"].value > 0
    assert metadata["samples_per_second"].value > 0
    assert metadata["peak_memory_mb"].value > 0
    assert metadata["answer_tokens_per_second"].value > 0
    assert metadata["dropped_samples"].value == 0
    assert 0.0 <= metadata["padding_fraction"].value < 1.0
    assert metadata["images_encoded"].value > 0  # no vq_codes here: encoded at stage start
    assert set(metadata["lengths"].value) == {"comprehension", "generation"}
    assert metadata["precision"].value["precision"] == "fp32"
    assert set(metadata["final_loss"].value) == {"comprehension", "generation"}
    assert metadata["loss_curve"].value.startswith("![loss curve](data:image/png;base64,")
    assert metadata["config"].value["max_steps"] == 4
    final = Path(metadata["final_dir"].value)
    assert final == current_final(data / "checkpoints" / "stage1")
    assert set(metadata["files"].value) == {"model.safetensors", "loss.png"}
    assert (final / "model.safetensors").is_file()
    # What evaluation loads: CURRENT.json -> final dir -> the save_trainable file, strictly.
    assert resolve_checkpoint(data / "checkpoints", "stage1") == final
    model, notes = load_healthgpt(ModelSpec(checkpoint=str(final)))
    assert model.config.name == "tiny" and "into preset 'tiny'" in notes[0], notes
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("step 4/4" in m and "tokens/s" in m for m in messages), "no progress in the log"


def test_training_assets_form_one_lineage_in_pool_gpu():
    mixture = [dg.AssetSpec(["mixture", s]) for s in ("stage1", "stage2", "stage3")]
    defs = dg.Definitions(
        assets=[*mixture, *training_assets],
        resources={
            "locations": DataLocations(),
            "training_pipes": dg.PipesSubprocessClient(),
        },
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for name in ("vq_tokenizer", "vq_codes", "train_stage1", "train_stage2", "train_stage3"):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "training" and "pytorch" in node.kinds
        assert node.owners == ["team:training"] and node.description
    parents = {
        name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        for name in ("train_stage1", "train_stage2", "train_stage3")
    }
    assert parents == {
        "train_stage1": {"mixture/stage1", "vq_tokenizer", "vq_codes"},
        "train_stage2": {"mixture/stage2", "vq_tokenizer", "vq_codes", "train_stage1"},
        "train_stage3": {"mixture/stage3", "vq_tokenizer", "vq_codes", "train_stage2"},
    }
    vq_codes_parents = {k.to_user_string() for k in graph.get(dg.AssetKey("vq_codes")).parent_keys}
    assert vq_codes_parents == {
        "mixture/stage1",
        "mixture/stage2",
        "mixture/stage3",
        "vq_tokenizer",
    }
    assert all(asset.op.pool == "gpu" for asset in training_assets[1:])
