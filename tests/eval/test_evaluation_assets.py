"""End to end through Dagster: the four evaluation assets on tiny data with test-double models."""

import json
import re

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
    # Table 1, LLaVA-Med row: VQA-RAD close 1 of 2, all 62.5 of 4; SLAKE 2/2; every cell
    # with its size and interval; empty cells say why
    assert (
        "| 50.0 (n=2; 9.4–90.5) ⚠ | 62.5 (n=4; 15.6–100.0) ⚠ | 100.0 (n=2; 34.2–100.0) ⚠ "
        "| 100.0 (n=2; 34.2–100.0) ⚠ | – (not ingested) | – (not ingested) | "
        "– (not configured) | – (not configured) | – (needs all 8) |"
    ) in ours[0]
    assert "strict scorer" in ours[1]
    # Table 2: CT->MRI brain is perfect for the identity stub; the other columns say why
    assert "| 100.00 (n=2; 100.00–100.00) | 100.00 (n=2; 100.00–100.00) |" in ours[2]
    assert "– (no held-out ct2mri pelvis pairs)" in ours[2]
    # Table 3 is IXI only: the stub's super-resolution pair (SynthRAD2023) is listed apart
    assert "– (no held-out IXI super-resolution pairs)" in ours[3]
    assert "| super_resolution | synthrad2023 | 1 | " in report and "28.13 (n=1" in report
    assert "pathvqa: no ingested test split" in report
    assert "- multiple choice: nothing evaluated (see the notes)" in report
    png = metadata(result, "eval_report")["table1"].value
    assert png.startswith("![Table 1: this run vs the paper](data:image/png;base64,")


def test_mcq_configured_through_config_reaches_table1_and_table9(data_dir, tmp_path):
    roots = {
        "mmmu_med": str(write_mmmu(tmp_path / "MMMU")),
        "omnimedvqa": str(write_omnimedvqa(tmp_path / "OmniMedVQA")),
    }
    result = materialize(data_dir, {"ops": {"eval_mcq": {"config": {"roots": roots}}}})
    assert result.success
    meta = metadata(result, "eval_mcq")
    assert "omnimedvqa: 1 rows skipped: image file missing" in meta["notes"].value
    report = (data_dir / "eval" / "report.md").read_text()
    ours = [line for line in report.splitlines() if "**this run (stub)**" in line]
    # MMMU-Med: 1 of all 3 questions (the open one included); OMVQA: the mean of the paper's
    # Table 9 columns, so the fundus question (no such column) does not count: CT 100
    assert (
        "| 33.3 (n=3; 6.2–79.2) ⚠ | 100.0 (n=1; 60.3–100.0) [1 of 7 columns; not comparable "
        "with the paper] | – (OMVQA has 1 of 7 columns: not comparable) |" in ours[0]
    )
    assert "All-modality mean over every modality this run evaluated" in report
    assert "(not the paper's definition): 50.0" in report
    # Table 9 row: CT 100 (column 1), FDM empty with the reason
    assert ours[-1].startswith(
        "| **this run (stub)** | 100.0 (n=1; 20.6–100.0) ⚠ | – (no question) |"
    )
    assert "– (not expanded in the paper)" in ours[-1]


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
    # every cell of this run carries its size and interval; the trained form is named
    row = next(line for line in report.splitlines() if "LLaVA-Med scorer |" in line)
    assert len(re.findall(r"\d\.\d \(n=\d; \d+\.\d–\d+\.\d\)", row)) == 4
    assert scores["prompt_forms"]["vqa closed"].startswith("plain (trained:")
