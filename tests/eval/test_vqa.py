import json

import pyarrow.parquet as pq
import pytest

from healthgpt.eval.predict import Scored, TextItem
from healthgpt.eval.run import RunOptions, run_benchmarks
from healthgpt.eval.vqa import (
    VqaTally,
    question_options,
    read_vqa_items,
    score_closed,
    score_open,
    score_vqa,
)
from tests.eval.fakes import VQA_CASES, FakeTextModel, vqa_replies, write_ingested_vqa


@pytest.mark.parametrize(
    ("reply", "gold", "question", "credit", "rule"),
    [
        ("Yes", "yes", "Is there a mass?", 1.0, "exact"),
        ("yes.", "Yes", "Is there a mass?", 1.0, "exact"),
        ("Yes, there is a mass.", "yes", "Is there a mass?", 1.0, "yes_no"),
        ("No, there is not.", "yes", "Is there a mass?", 0.0, "yes_no"),
        ("There is no mass, yes.", "no", "Is there a mass?", 1.0, "yes_no"),  # first one counts
        ("I cannot tell", "no", "Is there a mass?", 0.0, "no_yes_no"),
        ("left", "left", "Left or right?", 1.0, "exact"),
        ("On the left side.", "left", "Is it on the left or right?", 1.0, "option"),
        ("left or right", "left", "Is it on the left or right?", 0.0, "mismatch"),
        ("right", "left", "Is it on the left or right?", 0.0, "mismatch"),
        ("The liver", "liver", "Which is bigger, liver or spleen?", 1.0, "exact"),
        ("two", "2", "Are there 2 or 3 nodules?", 1.0, "exact"),
    ],
)
def test_closed_scoring(reply, gold, question, credit, rule):
    result = score_closed(reply, gold, question)
    assert (result.score, result.rule) == (credit, rule)


def test_question_options_are_the_words_around_or():
    assert question_options("Is this a CT or an MRI?") == {"ct", "mri"}
    assert question_options("Is there a mass?") == set()


@pytest.mark.parametrize(
    ("reply", "gold", "credit"),
    [
        ("left kidney", "Left kidney", 1.0),
        ("The kidney", "left kidney", 0.5),
        ("a large mass in the left kidney", "left kidney", 1.0),
        ("lung", "left kidney", 0.0),
        ("2", "two", 1.0),
    ],
)
def test_open_scoring_is_gold_word_recall(reply, gold, credit):
    assert score_open(reply, gold).score == pytest.approx(credit)


def test_tally_close_all_and_open_by_hand():
    tally = VqaTally()
    items = [("closed", 1.0), ("closed", 0.0), ("open", 0.5), ("open", 1.0)]
    for answer_type, score in items:
        item = TextItem(id="x", benchmark="b", question="q", answer="a", answer_type=answer_type)
        tally.add(item, Scored("", "rule", score, score))
    summary = tally.summary()
    values = [summary[k]["value"] for k in ("close", "open", "all")]
    assert values == [50.0, 75.0, 62.5]
    assert [summary["llava_med"][k]["value"] for k in ("close", "open", "all")] == values
    assert (
        summary["close"]["n"] == 2 and summary["close"]["ci"][0] < 50.0 < summary["close"]["ci"][1]
    )
    assert (summary["n_closed"], summary["n_open"], summary["n"]) == (2, 2, 4)


def test_reader_streams_only_the_test_split(tmp_path):
    directory = write_ingested_vqa(tmp_path, "vqa_rad", VQA_CASES["vqa_rad"])
    items = list(read_vqa_items(directory, "vqa_rad"))
    assert [i.question for i in items] == [c[0] for c in VQA_CASES["vqa_rad"]]
    assert [i.answer_type for i in items] == ["closed", "closed", "open", "open"]
    assert all(i.images and i.images[0][:4] == b"\x89PNG" for i in items)
    assert len(list(read_vqa_items(directory, "vqa_rad", limit=2))) == 2


def test_evaluate_vqa_scores_writes_predictions_and_notes_missing_sources(tmp_path):
    sources = {
        "vqa_rad": write_ingested_vqa(tmp_path, "vqa_rad", VQA_CASES["vqa_rad"]),
        "pathvqa": tmp_path / "ingested" / "pathvqa",
    }
    model = FakeTextModel(vqa_replies())
    options = RunOptions(batch_size=3, limit=0, label="fake")
    result = run_benchmarks("vqa", lambda: model, sources, tmp_path / "out", options)
    assert model.batches == [3, 1]
    assert result.scores["vqa_rad"]["close"]["value"] == 50.0
    assert result.scores["vqa_rad"]["all"]["value"] == 62.5
    assert "pathvqa" not in result.scores
    assert any("pathvqa" in note for note in result.notes)
    table = pq.read_table(tmp_path / "out" / result.shards[0].path).to_pylist()
    assert [r["prediction"] for r in table] == [c[3] for c in VQA_CASES["vqa_rad"]]
    assert [r["score"] for r in table] == [1.0, 0.0, 0.5, 1.0]
    assert table[0]["prompt"] == table[0]["question"]


def test_score_vqa_dispatches_on_answer_type():
    closed = TextItem(id="1", benchmark="b", question="Is it?", answer="yes", answer_type="closed")
    opened = TextItem(id="2", benchmark="b", question="What?", answer="yes sir", answer_type="open")
    assert score_vqa(closed, "yes sir").rule == "yes_no"
    assert score_vqa(opened, "yes").rule == "recall"


def test_chunk_partitioned_ingestion_is_read_too(tmp_path):
    whole = write_ingested_vqa(tmp_path / "whole", "slake", VQA_CASES["slake"])
    directory = tmp_path / "chunked"
    directory.mkdir()
    whole.rename(directory / "chunk=000")
    manifest_file = directory / "chunk=000" / "_manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["summary"]["chunk"] = [0, 1]  # the one chunk of a one-chunk plan
    manifest_file.write_text(json.dumps(manifest))
    assert len(list(read_vqa_items(directory, "slake"))) == 2
