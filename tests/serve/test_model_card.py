"""The model card a training stage writes, and the scores the evaluation records in it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from healthgpt.eval.run import run_report
from healthgpt.train.model_card import (
    CARD_NAME,
    NOT_EVALUATED,
    _write,
    read_card,
    record_evaluation,
    write_model_card,
)
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


@pytest.mark.parametrize(
    "front",
    [
        "license: mit",
        "- a list",
        "healthgpt: a string",
        "healthgpt: {stages: [1, 2]}",
        "healthgpt: {stages: stage3}",
        "a: b: c",
    ],
)
def test_evaluation_leaves_a_foreign_card_alone_and_says_so(tmp_path, caplog, front):
    """A checkpoint folder whose README.md is someone else's card (a Hugging Face download)
    has no pipeline card to update: it is skipped with a log line, unchanged."""
    card = tmp_path / CARD_NAME
    card.write_text(f"---\n{front}\n---\n# someone else's model\n")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    payload = {"model": "m", "checkpoint": str(tmp_path / "model.safetensors"),
               "benchmarks": {"vqa_rad": {"acc": {"value": 1.0}, "n": 3}}}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="healthgpt.train.model_card"):
        assert record_evaluation({"vqa": payload}, tmp_path / "report.md") == []
    assert card.read_text() == f"---\n{front}\n---\n# someone else's model\n"
    assert "is not a HealthGPT model card" in caplog.text


def test_names_cannot_inject_markdown_into_the_card(tmp_path):
    """Source and benchmark names are data: a newline or `|` in one cannot add a heading,
    a table row or a cell to the card's body."""
    evil_source = "evil | 1 |\n## Injected heading\n| a"
    meta = {
        "license": "other", "base_model": "b\n# base", "tags": [], "datasets": [evil_source],
        "healthgpt": {
            "preset": "p", "stage": "s", "stages": ["s"], "run_key": "r" * 16, "steps": 1,
            "recipe": "r",
            "mixture": {"version": "v", "subset": "s", "subset_fingerprint": "f" * 16,
                        "composition": {"source": {evil_source: 3}}},
            "evaluation": {"report": "r", "families": {
                "vqa\n# family": {"model": "m", "results": {"bench\n# INJECTED": {"acc": 1}}}}},
        },
    }  # fmt: skip
    _write(tmp_path, meta)
    body = (tmp_path / CARD_NAME).read_text().split("\n---\n", 1)[1]
    headings = [line for line in body.splitlines() if line.startswith("#")]
    assert not any("INJECTED" in h or "Injected" in h or "# base" in h for h in headings)
    rows = [line for line in body.splitlines() if line.startswith("| evil")]
    assert rows == ["| evil \\| 1 \\| ## Injected heading \\| a | 3 |"]
    assert "- bench # INJECTED: acc 1" in body and "### vqa # family" in body
    assert read_card(tmp_path)["datasets"] == [evil_source]  # the front matter keeps it
