"""The model card a training stage writes, and the scores the evaluation records in it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from healthgpt.eval.run import run_report
from healthgpt.train.model_card import CARD_NAME, NOT_EVALUATED, read_card, write_model_card
from healthgpt.train.run import current_final


def _front_matter(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_stage_writes_a_card_with_stages_mixture_and_no_scores(trained_data):
    final = current_final(trained_data / "checkpoints" / "stage3")
    meta = _front_matter(final / CARD_NAME)
    assert meta["license"] == "other"
    assert meta["base_model"].startswith("none (randomly initialized llama")
    assert "medical" in meta["tags"] and meta["datasets"] == ["synthetic"]
    own = meta["healthgpt"]
    assert own["stages"] == ["stage3"] and own["recipe"] == "cpu"
    assert own["mixture"]["subset"] == "stage3"
    assert len(own["mixture"]["version"]) == 16
    assert own["mixture"]["composition"]["task"] == {"reconstruction": 16, "vqa_closed": 16}
    state = json.loads((final / "state.json").read_text())
    assert own["mixture"]["subset_fingerprint"] == state["inputs"]["subset"]
    body = (final / CARD_NAME).read_text()
    for heading in ("## Base model", "## Training", "## Data", "## Evaluation", "## Limits"):
        assert heading in body
    assert NOT_EVALUATED in body and "Not for clinical use" in body
    assert "| vqa_closed | 16 |" in body


def test_stages_trained_follow_the_initializing_checkpoints_card(trained_data, tmp_path):
    final = current_final(trained_data / "checkpoints" / "stage3")
    state = json.loads((final / "state.json").read_text())
    subset = Path(read_card(final)["healthgpt"]["mixture"]["path"]) / "stage3"
    state["config"]["stage"] = "stage4"
    write_model_card(tmp_path, state, subset, init_dir=final)
    assert read_card(tmp_path)["healthgpt"]["stages"] == ["stage3", "stage4"]
    write_model_card(tmp_path, state, subset, init_dir=tmp_path / "no-card")
    stages = read_card(tmp_path)["healthgpt"]["stages"]
    assert stages[0].startswith("unknown (initialized from") and stages[1] == "stage4"


def test_report_records_scores_in_the_evaluated_checkpoints_card(trained_data, tmp_path):
    final = current_final(trained_data / "checkpoints" / "stage3")
    before = (final / CARD_NAME).read_text()
    eval_dir = tmp_path / "eval"
    vqa = {
        "model": "stage3 checkpoint",
        "checkpoint": str(final / "model.safetensors"),
        "notes": ["the wording of the notes does not matter"],
        "benchmarks": {
            "vqa_rad": {"close": {"value": 62.5, "n": 8, "ci": [1, 2]}, "open": None, "n": 8}
        },
    }
    other = {"model": "official weights", "checkpoint": None, "notes": ["official: ok"]}
    for family, payload in (("vqa", vqa), ("mcq", other)):
        (eval_dir / family).mkdir(parents=True)
        (eval_dir / family / "scores.json").write_text(json.dumps(payload))
    try:
        run_report(eval_dir)
        card = read_card(final)
        evaluation = card["healthgpt"]["evaluation"]
        assert evaluation["report"] == str(eval_dir / "report.md")
        assert evaluation["families"] == {
            "vqa": {"model": "stage3 checkpoint", "results": {"vqa_rad": {"close": 62.5, "n": 8}}}
        }
        body = (final / CARD_NAME).read_text()
        assert NOT_EVALUATED not in body and "- vqa_rad: close 62.5, n 8" in body
    finally:
        (final / CARD_NAME).write_text(before)  # the session's checkpoint, as the others see it


def test_an_evaluation_records_the_checkpoint_file_it_loaded(trained_data, tmp_path):
    """The card is found from the checkpoint `scores.json` records, not from note wording:
    a real evaluation of the trained checkpoint updates its card; scores without a
    checkpoint (whatever their notes say) update none."""
    from healthgpt.eval import models, run
    from tests.eval.fakes import VQA_CASES, write_ingested_vqa

    final = current_final(trained_data / "checkpoints" / "stage3")
    before = (final / CARD_NAME).read_text()
    eval_dir = tmp_path / "eval"
    root = write_ingested_vqa(tmp_path / "data", "vqa_rad", VQA_CASES["vqa_rad"][:1])
    spec = models.ModelSpec(checkpoint=str(final), max_new_tokens=2)
    options = run.RunOptions(batch_size=1, limit=1, label="stage3 checkpoint")
    try:
        done = run.run_benchmarks(
            "vqa", lambda: models.text_model(spec), {"vqa_rad": root}, eval_dir / "vqa", options
        )
        payload = json.loads((eval_dir / "vqa" / "scores.json").read_text())
        assert payload["checkpoint"] == done.checkpoint == str(final / "model.safetensors")
        assert "VQ weights: random (dry run)" in payload["notes"]  # the VQ weights it used
        run_report(eval_dir)
        families = read_card(final)["healthgpt"]["evaluation"]["families"]
        assert families["vqa"]["results"]["vqa_rad"]["n"] == 1
        (final / CARD_NAME).write_text(before)
        payload["checkpoint"] = None  # the loader's notes still name the file
        assert any(str(final) in note for note in payload["notes"])
        (eval_dir / "vqa" / "scores.json").write_text(json.dumps(payload))
        run_report(eval_dir)
        assert read_card(final)["healthgpt"]["evaluation"] is None
    finally:
        (final / CARD_NAME).write_text(before)  # the session's checkpoint, as the others see it
