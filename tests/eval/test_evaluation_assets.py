"""End to end through Dagster: the four evaluation assets on tiny data with test-double models."""

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from pipelines.definitions import defs
from pipelines.evaluation import EvalModels, evaluation_assets
from pipelines.resources import DataLocations
from tests.eval.fakes import (
    VQA_CASES,
    FakeImageModel,
    FakeTextModel,
    vqa_replies,
    write_generation_pairs,
    write_ingested_vqa,
    write_mmmu,
    write_omnimedvqa,
)

MCQ_REPLIES = {
    "Which finding is shown in (image 1)?": "The answer is B.",  # correct
    "What is the likely diagnosis?": "Lupus",  # wrong (gold C)
    "What modality is used?": "B",  # correct
    "Is this fundus normal?": "hard to say",  # unparsed
}


class StubEvalModels(EvalModels):
    """Test double of the model resource: deterministic fakes instead of HealthGPT."""

    def text_model(self, spec):
        return FakeTextModel({**vqa_replies(), **MCQ_REPLIES})

    def image_model(self, spec):
        return FakeImageModel()

    def label(self, spec):
        return "stub"


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    for source, cases in VQA_CASES.items():
        write_ingested_vqa(data, source, cases)
    write_generation_pairs(data / "mixture" / "eval" / "data")
    return data


def materialize(data_dir, run_config=None):
    return dg.materialize(
        evaluation_assets,
        resources={
            "locations": DataLocations(data_dir=str(data_dir)),
            "eval_models": StubEvalModels(),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config or {},
    )


def metadata(result, key):
    return result.asset_materializations_for_node(key)[0].metadata


def test_definitions_with_the_evaluation_group_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for asset in evaluation_assets:
        node = graph.get(asset.key)
        assert node.group_name == "evaluation" and node.description
    assert dg.AssetKey("train_stage3") in graph.get(dg.AssetKey("eval_vqa")).parent_keys


def test_end_to_end_report_with_stub_models_and_mcq_not_configured(data_dir, monkeypatch):
    monkeypatch.delenv("HEALTHGPT_MMMU_DIR", raising=False)
    monkeypatch.delenv("HEALTHGPT_OMNIMEDVQA_DIR", raising=False)
    result = materialize(data_dir, {"ops": {"eval_vqa": {"config": {"batch_size": 3}}}})
    assert result.success

    assert "not configured" in metadata(result, "eval_mcq")["notes"].value
    assert "grid" in metadata(result, "eval_generation")

    predictions = pq.read_table(data_dir / "eval" / "vqa" / "predictions-00000.parquet")
    assert predictions.num_rows == 6  # 4 VQA-RAD + 2 SLAKE test questions, no train rows
    assert set(predictions.column("benchmark").to_pylist()) == {"vqa_rad", "slake"}

    report = (data_dir / "eval" / "report.md").read_text()
    assert report == metadata(result, "eval_report")["report"].value
    ours = [line for line in report.splitlines() if "**this run (stub)**" in line]
    # Table 1: VQA-RAD close 50.0 all 62.5; SLAKE 100/100; PathVQA not ingested; no MCQ
    assert "| 50.0 | 62.5 | 100.0 | 100.0 | – | – | – | – | – |" in ours[0]
    # Table 2: CT->MRI brain is perfect for the identity stub; the other columns are empty
    assert "| 100.00 | 100.00 | 0.00 | – |" in ours[1]
    # Table 3: super-resolution pair off by 10 everywhere: MSE 100, PSNR 28.13
    assert "| 28.13 | 100.00 |" in ours[2]
    assert "pathvqa: no ingested test split" in report


def test_mcq_configured_through_config_reaches_table1_and_table9(data_dir, tmp_path):
    config = {
        "mmmu_dir": str(write_mmmu(tmp_path / "MMMU")),
        "mmmu_subjects": ["Clinical_Medicine"],
        "omnimedvqa_dir": str(write_omnimedvqa(tmp_path / "OmniMedVQA")),
    }
    result = materialize(data_dir, {"ops": {"eval_mcq": {"config": config}}})
    assert result.success
    meta = metadata(result, "eval_mcq")
    assert meta["configured"].value is True
    assert "omnimedvqa: 1 rows skipped: image file missing" in meta["notes"].value
    report = (data_dir / "eval" / "report.md").read_text()
    ours = [line for line in report.splitlines() if "**this run (stub)**" in line]
    # MMMU-Med 1 of 2 correct, OmniMedVQA 1 of 2 (one reply unparsed)
    assert "| – | – | 50.0 | 50.0 | – |" in ours[0]
    # Table 9 row: CT 100 (column 1), FDM left empty
    assert ours[-1].startswith("| **this run (stub)** | 100.0 | – | – |")


def test_tiny_preset_checkpoint_runs_through_the_real_loader(data_dir):
    """The real path: a stage's final `save_trainable` file, found through CURRENT.json, loaded
    by `healthgpt.model` (preset read from the file) and run by the HealthGPT adapters."""
    from healthgpt.model import load_model, save_trainable
    from pipelines.evaluation import eval_generation, eval_vqa

    stage = data_dir / "checkpoints" / "stage3"
    final = stage / "runs" / "abc" / "final"
    save_trainable(load_model("tiny"), final / "model.safetensors")
    (stage / "CURRENT.json").write_text(json.dumps({"final": str(final)}))
    result = dg.materialize(
        [eval_vqa, eval_generation],
        resources={"locations": DataLocations(data_dir=str(data_dir)), "eval_models": EvalModels()},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                "eval_vqa": {"config": {"limit": 1, "max_new_tokens": 4}},
                "eval_generation": {"config": {"limit": 1}},
            }
        },
    )
    assert result.success
    vqa_scores = json.loads((data_dir / "eval" / "vqa" / "scores.json").read_text())
    assert vqa_scores["model"] == "stage3 checkpoint"
    assert {b: s["n"] for b, s in vqa_scores["benchmarks"].items()} == {"vqa_rad": 1, "slake": 1}
    assert any("into preset 'tiny'" in note for note in vqa_scores["notes"])
    rows = pq.read_table(data_dir / "eval" / "generation" / "predictions-00000.parquet")
    assert rows.num_rows == 1 and rows.column("generated")[0].as_py()[:4] == b"\x89PNG"


def test_small_preset_on_the_bundled_samples_produces_the_report(tmp_path):
    """Bundled VQA-RAD and SLAKE samples, ingested by the real readers, evaluated with a tiny
    preset checkpoint through the real loader, rendered into the report."""
    from healthgpt.data.ingest.run import ingest
    from healthgpt.data.samples import build_sample_source
    from healthgpt.model import load_model, save_trainable
    from pipelines.evaluation import eval_generation, eval_mcq, eval_report, eval_vqa

    data = tmp_path / "data"
    for source in ("vqa_rad", "slake"):
        root = build_sample_source(source, tmp_path / "sources")
        ingest(source, root, data / "ingested" / source)
    write_generation_pairs(data / "mixture" / "eval" / "data")
    stage = data / "checkpoints" / "stage3"
    final = stage / "runs" / "r" / "final"
    save_trainable(load_model("tiny"), final / "model.safetensors", metadata={"preset": "tiny"})
    (stage / "CURRENT.json").write_text(json.dumps({"final": str(final)}))
    result = dg.materialize(
        [eval_vqa, eval_mcq, eval_generation, eval_report],
        resources={"locations": DataLocations(data_dir=str(data)), "eval_models": EvalModels()},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                "eval_vqa": {"config": {"limit": 3, "max_new_tokens": 4}},
                "eval_generation": {"config": {"limit": 1}},
            }
        },
    )
    assert result.success
    scores = json.loads((data / "eval" / "vqa" / "scores.json").read_text())
    assert {b: s["n"] for b, s in scores["benchmarks"].items()} == {"vqa_rad": 3, "slake": 3}
    report = (data / "eval" / "report.md").read_text()
    assert "this run (stage3 checkpoint)" in report
    assert "HealthGPT-M3" in report
