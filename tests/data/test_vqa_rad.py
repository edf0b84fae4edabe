"""VQA-RAD reader on the bundled sample and on hand-written edge cases."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import catalog, vqa_rad
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.vqa_rad import IMAGE_DIR, JSON_NAME, VqaRadReader
from tests.data.outputs import meta, quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "vqa_rad.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vqa_rad")
    vqa_rad.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa_rad_out")
    return run("vqa_rad", sample, out), out


def write_source(root: Path, rows: list, images: dict[str, str] | None = None) -> Path:
    """A hand-written VQA-RAD layout: the JSON rows and the named catalog images."""
    for name, image in (images or {"img1.jpg": "ct_head"}).items():
        catalog.write_jpeg(catalog.get(image), root / IMAGE_DIR / name, max_side=64)
    (root / JSON_NAME).write_text(json.dumps(rows))
    return root


def row(qid, question="Is this a CT?", answer="yes", **fields) -> dict:
    return {
        "qid": qid,
        "image_name": "img1.jpg",
        "image_organ": "HEAD",
        "question": question,
        "answer": answer,
        "answer_type": "CLOSED",
        "question_type": "PRES",
        "phrase_type": "freeform",
        **fields,
    }


def test_sample_counts_match_the_manifest(ingested):
    summary, _ = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    assert summary.items == expected["items"]
    assert summary.quarantined == expected["quarantined"]
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    assert summary.reconciled


def test_bad_inputs_are_quarantined_with_reasons(ingested):
    _, out = ingested
    reasons = {q["rel_path"]: q["reason"] for q in quarantine(out)}
    assert reasons == {
        f"{IMAGE_DIR}/synpic99990.jpg": "image file missing: synpic99990.jpg",
        f"{IMAGE_DIR}/synpic99991.jpg": "image file is empty (0 bytes): synpic99991.jpg",
        f"{IMAGE_DIR}/synpic99992.jpg": reasons[f"{IMAGE_DIR}/synpic99992.jpg"],
    }
    assert "truncated" in reasons[f"{IMAGE_DIR}/synpic99992.jpg"]


def test_modality_is_inferred_per_image_from_its_modality_questions(ingested):
    _, out = ingested
    by_image = defaultdict(set)
    for record in records(out):
        by_image[meta(record)["image_name"]].add((record["modality"], record["body_part"]))
        assert meta(record)["modality_source"] == "modality_question"
    expected = {
        f"synpic{90001 + n}.jpg": {(catalog.get(name).modality, catalog.get(name).body_part)}
        for n, name in enumerate(vqa_rad.IMAGES)
    }
    assert dict(by_image) == expected


def test_test_split_is_the_test_phrase_types_and_shares_images_with_train(ingested):
    _, out = ingested
    images = defaultdict(set)
    for record in records(out):
        is_test = meta(record)["phrase_type"].startswith("test")
        assert record["split"] == ("test" if is_test else "train")
        images[record["split"]].add(record["image"]["bytes"])
    assert images["train"] & images["test"], "the real dataset shares images across splits"


def test_answers_are_strings_and_answer_types_normalized(ingested):
    _, out = ingested
    rows = records(out)
    assert {r["answer_type"] for r in rows} == {"open", "closed"}
    counts = [r for r in rows if r["question"].startswith("How many color channels")]
    assert counts and {r["answer"] for r in counts} == {"1"}
    assert all(r["answer"] in ("yes", "no") for r in rows if r["answer_type"] == "closed")


def test_edge_cases_numbers_odd_labels_duplicates_escapes(tmp_path):
    rows = [
        row(1, "How many lesions are there?", 2, answer_type="OPEN", question_type="COUNT"),
        row(2, "How big is it in cm?", 3.0, answer_type="open ", question_type="SIZE"),
        row(3, answer_type="CLOSED "),
        row(4, answer_type="Closed", phrase_type="test_para"),
        row(4, answer_type=None, phrase_type="TEST_FREEFORM"),  # duplicate qid, no type
        row(5, image_name="../../etc/passwd"),
        "not an object",
        row(6, answer=""),
    ]
    root = write_source(tmp_path / "src", rows)
    summary = run("vqa_rad", root, tmp_path / "out")
    got = {r["orig_id"]: r for r in records(tmp_path / "out")}
    assert (got["1"]["answer"], got["1"]["answer_type"]) == ("2", "open")
    assert (got["2"]["answer"], got["2"]["answer_type"]) == ("3", "open")
    assert [got[k]["answer_type"] for k in ("3", "4", "4#2")] == ["closed"] * 3
    assert [got[k]["split"] for k in ("3", "4", "4#2")] == ["train", "test", "test"]
    assert len({r["id"] for r in got.values()}) == len(got)
    reasons = sorted(q["reason"] for q in quarantine(tmp_path / "out"))
    assert reasons == [
        "QA row has an empty question or answer",
        "QA row is not a JSON object",
        "path '../../etc/passwd' points outside the source root",
    ]
    assert (summary.items, summary.records) == (8, 5)


def test_modality_rules_closed_yes_counts_no_does_not_then_question_text(tmp_path):
    images = {"a.jpg": "ct_head", "b.jpg": "mr_head", "c.jpg": "cr_chest_pa", "d.jpg": "ct_neck"}
    rows = [
        row(1, "Is this an MRI?", "no", image_name="a.jpg", question_type="MODALITY"),
        row(2, "Is this a CT scan?", "yes", image_name="a.jpg", question_type="MODALITY"),
        row(3, "Is the lesion bright on T2?", "yes", image_name="b.jpg"),
        row(4, "What modality?", "plain film", image_name="c.jpg", question_type="MODALITY"),
        row(5, "Is there a fracture?", "no", image_name="d.jpg"),
    ]
    root = write_source(tmp_path / "src", rows, images)
    run("vqa_rad", root, tmp_path / "out")
    got = {meta(r)["image_name"]: r for r in records(tmp_path / "out")}
    assert (got["a.jpg"]["modality"], meta(got["a.jpg"])["modality_source"]) == (
        "CT",
        "modality_question",
    )
    assert (got["b.jpg"]["modality"], meta(got["b.jpg"])["modality_source"]) == (
        "MRI",
        "question_text",
    )
    assert got["c.jpg"]["modality"] == "X-Ray"
    assert (got["d.jpg"]["modality"], meta(got["d.jpg"])["modality_source"]) == (
        "Other",
        "unknown",
    )


def test_truncated_json_keeps_the_rows_before_and_quarantines_the_rest(tmp_path):
    root = write_source(tmp_path / "src", [row(1), row(2)])
    text = (root / JSON_NAME).read_text()
    (root / JSON_NAME).write_text(text[: text.rindex("{") + 10])
    summary = run("vqa_rad", root, tmp_path / "out")
    assert (summary.records, summary.quarantined) == (1, 1)
    assert "unparseable JSON" in quarantine(tmp_path / "out")[0]["reason"]


def test_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / JSON_NAME).write_text("[]")
    with pytest.raises(LayoutError, match="VQA_RAD Image Folder") as error:
        VqaRadReader(tmp_path).validate_layout()
    assert "Expected layout" in str(error.value)
