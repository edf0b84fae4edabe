"""Task builders: one record in, the planned and rendered samples out."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from healthgpt.data.decode.imaging import decode_png
from healthgpt.data.mixture.config import MixtureConfig, sample_preset
from healthgpt.data.mixture.tasks import (
    CAPTION_PROMPTS,
    CONVERSION_PROMPTS,
    TARGET_IMAGE_TOKEN,
    AnswerSets,
    TaskContext,
    degrade,
    plan_record,
    render_sample,
)
from healthgpt.data.schema import SAMPLE_SCHEMA, TASKS, new_record
from tests.data.mixture_helpers import png, vqa


def build(
    record,
    config: MixtureConfig | None = None,
    answers: AnswerSets | None = None,
    source: str | None = None,
):
    """Plan and render every sample of one record."""
    config = config or sample_preset(tasks=list(TASKS))
    source = source or record["source"]
    ctx = TaskContext(config, answers or AnswerSets())
    planned, reason = plan_record(record, source, record["split"], ctx)
    return [render_sample(record, p, source, ctx) for p in planned], reason


def by_task(rows):
    return {row["task"]: row for row in rows}


def test_open_question_becomes_a_conversation():
    record = vqa("vqa_rad", "q1", "train", png(1), "What organ is shown?", "Liver", "open")
    rows, reason = build(record)
    assert reason is None and [r["task"] for r in rows] == ["vqa_open"]
    row = rows[0]
    assert row["conversations"] == [
        {"from": "human", "value": "<image>\nWhat organ is shown?"},
        {"from": "gpt", "value": "Liver"},
    ]
    assert row["task_family"] == "comprehension" and row["target_image"] is None
    assert row["image"]["bytes"] == record["image"]["bytes"]
    assert set(row) == set(SAMPLE_SCHEMA.names)


@pytest.mark.parametrize(
    ("style", "tasks"),
    [("plain", ["vqa_closed"]), ("choice", ["vqa_choice"]), ("both", ["vqa_choice", "vqa_closed"])],
)
def test_closed_question_style_switch(style, tasks):
    record = vqa("vqa_rad", "q1", "train", png(1), "Is there a fracture?", "yes", "closed")
    rows, _ = build(record, sample_preset(closed_question_style=style))
    assert sorted(r["task"] for r in rows) == tasks


def test_yes_no_choice_lists_both_options_and_answers_with_the_right_letter():
    record = vqa("vqa_rad", "q1", "train", png(1), "Is there a fracture?", "Yes", "closed")
    row = build(record)[0][0]
    meta = json.loads(row["meta"])
    assert sorted(meta["options"]) == ["no", "yes"]
    letter = meta["answer_letter"]
    assert row["conversations"][1]["value"] == letter
    assert f"{letter}. yes" in row["conversations"][0]["value"]
    assert row["answer_type"] == "closed"


def test_choice_distractors_come_from_the_same_source_and_question_type():
    answers = AnswerSets()
    train = [
        vqa("vqa_rad", f"m{i}", "train", png(i), "Which modality?", a, "closed", "MODALITY")
        for i, a in enumerate(["ct", "mri", "x-ray", "ultrasound", "pet"])
    ]
    train.append(vqa("vqa_rad", "o1", "train", png(9), "Which organ?", "kidney", "closed", "ORGAN"))
    train.append(
        vqa("slake", "s1", "train", png(8), "Which modality?", "fundus", "closed", "MODALITY")
    )
    for record in train:
        answers.add(record, record["source"])
    record = vqa(
        "vqa_rad", "t1", "test", png(20), "What modality is this?", "MRI", "closed", "MODALITY"
    )
    config = sample_preset(max_choice_options=3)
    row = build(record, config, answers)[0][0]
    options = json.loads(row["meta"])["options"]
    assert len(options) == 3 and "mri" in options
    assert set(options) <= {"ct", "mri", "x-ray", "ultrasound", "pet"}  # not kidney, not fundus
    again = build(record, config, answers)[0][0]
    assert again == row  # seeded by the sample id


def test_closed_question_without_distractors_stays_closed():
    record = vqa("vqa_rad", "q1", "train", png(1), "Which lobe?", "left upper", "closed", "POS")
    rows, _ = build(record)  # the answer set has only this answer: no choice possible
    assert [r["task"] for r in rows] == ["vqa_closed"]


def test_caption_and_report_become_description_tasks_with_varied_prompts():
    prompts = set()
    for i in range(24):
        record = new_record(
            source="roco",
            orig_id=f"c{i}",
            split="train",
            kind="caption",
            modality="CT",
            image=png(i),
            text=f"Axial CT {i}.",
        )
        row = by_task(build(record)[0])["caption"]
        prompt = row["conversations"][0]["value"].removeprefix("<image>\n")
        assert prompt in CAPTION_PROMPTS
        assert row["conversations"][1]["value"] == f"Axial CT {i}."
        prompts.add(prompt)
    assert len(prompts) > 1


def test_chest_report_gives_report_and_text_to_image():
    text = "FINDINGS: No effusion. IMPRESSION: Normal chest."
    record = new_record(
        source="mimic_cxr",
        orig_id="r1",
        split="train",
        kind="report",
        modality="X-Ray",
        image=png(1),
        body_part="chest",
        text=text,
    )
    rows = by_task(build(record)[0])
    assert rows["report"]["conversations"][1]["value"] == text
    t2i = rows["text_to_image"]
    assert t2i["task_family"] == "generation" and t2i["direction"] == "text->X-Ray"
    assert t2i["image"] is None
    assert t2i["target_image"]["bytes"] == record["image"]["bytes"]
    assert text in t2i["conversations"][0]["value"]
    assert "<image>" not in t2i["conversations"][0]["value"]
    assert t2i["conversations"][1]["value"] == TARGET_IMAGE_TOKEN


def test_conversation_passes_through_and_multi_image_is_dropped():
    turns = [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A"}]
    single = new_record(
        source="llava_json",
        orig_id="c1",
        split="train",
        kind="conversation",
        modality="Other",
        image=png(1),
        conversations=turns,
    )
    rows = by_task(build(single, sample_preset(tasks=["conversation"]))[0])
    assert rows["conversation"]["conversations"] == turns
    multi = {**single, "meta": json.dumps({"n_images": 3})}
    assert build(multi) == ([], "multi_image")


def test_modality_conversion_in_both_directions_swaps_the_images():
    mr, ct = png(1), png(2)
    record = new_record(
        source="synthrad2023",
        orig_id="1P001:40",
        split="train",
        kind="pair",
        modality="MRI",
        image=mr,
        target_image=ct,
        target_modality="CT",
        task="mri_to_ct",
        body_part="pelvis",
        subject_id="1P001",
    )
    rows = by_task(build(record)[0])
    forward, reverse = rows["mri_to_ct"], rows["ct_to_mri"]
    assert (forward["image"]["bytes"], forward["target_image"]["bytes"]) == (mr, ct)
    assert (reverse["image"]["bytes"], reverse["target_image"]["bytes"]) == (ct, mr)
    assert forward["direction"] == "MRI->CT" and reverse["direction"] == "CT->MRI"
    assert (reverse["modality"], reverse["target_modality"]) == ("CT", "MRI")
    prompt = reverse["conversations"][0]["value"].removeprefix("<image>\n")
    assert prompt in {p.format(src="CT", dst="MRI", part="pelvis") for p in CONVERSION_PROMPTS}
    assert forward["id"] != reverse["id"]


def test_super_resolution_input_is_the_stated_degradation_and_reconstruction_is_identity():
    original = png(7, size=64)
    record = new_record(
        source="ixi",
        orig_id="IXI002-T2:50",
        split="train",
        kind="image",
        modality="MRI",
        image=original,
        subject_id="s2",
        meta=json.dumps({"sequence": "T2"}),
    )
    rows = by_task(build(record)[0])
    sr = rows["super_resolution"]
    assert sr["target_image"]["bytes"] == original
    expected = Image.open(io.BytesIO(original)).resize((16, 16), Image.BICUBIC)
    expected = np.asarray(expected.resize((64, 64), Image.BICUBIC))
    assert np.array_equal(decode_png(sr["image"]["bytes"]), expected)
    assert sr["image"]["bytes"] == degrade(original, 4)
    assert "T2-weighted MRI" in sr["conversations"][0]["value"]
    assert "BICUBIC" in json.loads(sr["meta"])["degradation"]
    recon = rows["reconstruction"]
    assert recon["image"]["bytes"] == recon["target_image"]["bytes"] == original


def test_sample_ids_and_prompts_do_not_depend_on_order_but_on_the_seed():
    records = [
        new_record(
            source="ixi",
            orig_id=f"v:{i}",
            split="train",
            kind="image",
            modality="MRI",
            image=png(i),
        )
        for i in range(12)
    ]
    forward = [build(r)[0] for r in records]
    backward = [build(r)[0] for r in reversed(records)][::-1]
    assert forward == backward
    reseeded = [build(r, sample_preset(seed=1))[0] for r in records]
    prompts = lambda rows_list: [rows[0]["conversations"][0]["value"] for rows in rows_list]  # noqa: E731
    assert prompts(reseeded) != prompts(forward)


def test_every_task_has_a_family_and_the_config_rejects_unknown_tasks():
    assert len(TASKS) == 11
    with pytest.raises(ValueError):
        MixtureConfig(tasks=["vqa_open", "segmentation"])
    with pytest.raises(ValueError):
        MixtureConfig(stage3_caps={"vqa_rad": 10})


def test_more_choice_options_than_letters_is_refused():
    from healthgpt.data.mixture.config import MixtureConfig
    from healthgpt.data.vocab import OPTION_LETTERS

    MixtureConfig(max_choice_options=len(OPTION_LETTERS))
    with pytest.raises(ValueError, match="max_choice_options is at most"):
        MixtureConfig(max_choice_options=len(OPTION_LETTERS) + 1)
