"""For every preset and every task, a held-out sample is asked in the form its task trains on:
the evaluation prompt of a test record is the training rendering's form (plain question vs
lettered choice as the preset's `closed_question_style` says; the task's template and
placeholders for the other tasks)."""

from __future__ import annotations

import json
import re

import pytest

from healthgpt.data.mixture.config import PRESETS
from healthgpt.data.mixture.tasks import AnswerSets, TaskContext, plan_record, render_sample
from healthgpt.data.schema import new_record
from healthgpt.data.tasks import (
    CLOSED_STYLE_TASKS,
    EVAL_FORMS,
    IMAGE_TOKEN,
    PLAIN,
    SINGLE_CHOICE,
    TARGET_IMAGE_TOKEN,
    TASK_SPECS,
    TEMPLATE,
    choice_prompt,
    strip_image,
)
from healthgpt.eval.generation import _instruction
from healthgpt.eval.predict import render_prompt
from healthgpt.eval.vqa import read_vqa_items
from tests.data.mixture_helpers import png, vqa, write_ingested

VQA_ROWS = [
    # (id, split, question, answer, answer_type, question type)
    ("t1", "train", "Is there a fracture?", "yes", "closed", "ABN"),
    ("t2", "train", "Which side is the lesion on?", "left", "closed", "POS"),
    ("t3", "train", "Which side is the mass on?", "right", "closed", "POS"),
    ("t4", "train", "What organ is shown?", "liver", "open", "ORGAN"),
    ("e1", "test", "Is this normal?", "no", "closed", "ABN"),
    ("e2", "test", "Which side is the nodule on?", "right", "closed", "POS"),
    ("e3", "test", "Where is the lesion?", "left lobe", "open", "POS"),
]


def _vqa_records():
    return [
        vqa("vqa_rad", orig, split, png(i), q, a, kind, qtype)
        for i, (orig, split, q, a, kind, qtype) in enumerate(VQA_ROWS)
    ]


def _trained_tasks(config, records, answers) -> dict[str, set[str]]:
    """answer_type -> the VQA tasks the training split is rendered as."""
    ctx = TaskContext(config, answers)
    found: dict[str, set[str]] = {}
    for record in records:
        if record["split"] == "train":
            planned, _ = plan_record(record, "vqa_rad", "train", ctx)
            found.setdefault(record["answer_type"], set()).update(p.task for p in planned)
    return found


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_vqa_is_asked_in_the_form_it_trains_on(tmp_path, preset):
    config = PRESETS[preset]()
    records = _vqa_records()
    directory = write_ingested(tmp_path, "vqa_rad", records)
    answers = AnswerSets()
    for record in records:
        answers.add(record, "vqa_rad")
    trained = _trained_tasks(config, records, answers)
    closed_task = CLOSED_STYLE_TASKS[config.closed_question_style][0]
    assert closed_task in trained["closed"] and trained["open"] == {"vqa_open"}

    items = list(read_vqa_items(directory, "vqa_rad", trained=config))
    assert len(items) == 3
    for item in items:
        task = closed_task if item.answer_type == "closed" else "vqa_open"
        assert item.form == EVAL_FORMS[task], (preset, item.question)
        prompt = render_prompt(item)
        if EVAL_FORMS[task] == SINGLE_CHOICE:
            assert item.answer in item.options and len(item.options) >= 2
            assert prompt == choice_prompt(item.question, item.options)
        else:
            assert EVAL_FORMS[task] == PLAIN and prompt == item.question and not item.options


def _record_for(task: str, split: str) -> dict:
    """A record whose plan yields `task` (under a config that allows it)."""
    common = {"source": "src", "orig_id": f"{task}-{split}", "split": split}
    if task in ("ct_to_mri", "mri_to_ct"):
        src, dst = ("CT", "MRI") if task == "ct_to_mri" else ("MRI", "CT")
        return new_record(
            **common,
            kind="pair",
            modality=src,
            image=png(1),
            target_image=png(2),
            target_modality=dst,
            body_part="brain",
        )
    kind = {
        "caption": "caption",
        "report": "report",
        "text_to_image": "report",
        "super_resolution": "image",
        "reconstruction": "image",
        "conversation": "conversation",
    }[task]
    turns = [{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "A lung."}]
    return new_record(
        **common,
        kind=kind,
        modality="X-Ray",
        image=png(3),
        body_part="chest",
        text="FINDINGS: clear lungs. IMPRESSION: normal."
        if kind in ("caption", "report")
        else None,
        conversations=turns if kind == "conversation" else None,
    )


def _rendered(config, record, task):
    ctx = TaskContext(config, AnswerSets())
    planned, reason = plan_record(record, "src", record["split"], ctx)
    chosen = [p for p in planned if p.task == task]
    assert chosen, (task, reason)
    return render_sample(record, chosen[0], "src", ctx)


def _human(row) -> str:
    return row["conversations"][0]["value"]


NON_VQA = [t for t in TASK_SPECS if TASK_SPECS[t].kinds != ("vqa",)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("task", NON_VQA)
def test_every_other_task_is_asked_as_it_trains(preset, task):
    # Routing is the preset's business (tested with the paper preset); here every task is
    # allowed from the test source, with the preset's own rendering knobs.
    config = PRESETS[preset](tasks=list(TASK_SPECS), task_sources={})
    spec = TASK_SPECS[task]
    held_out = _rendered(config, _record_for(task, "test"), task)
    training = _rendered(config, _record_for(task, "train"), task)
    human = _human(held_out)
    assert (
        human.startswith(f"{IMAGE_TOKEN}\n")
        == spec.needs_image
        == _human(training).startswith(f"{IMAGE_TOKEN}\n")
    )
    assert (held_out["conversations"][-1]["value"] == TARGET_IMAGE_TOKEN) == spec.needs_target
    if spec.prompt == TEMPLATE:
        template = json.loads(held_out["meta"])["template"]
        assert json.loads(training["meta"])["template"] in range(len(spec.prompts))
        pattern = re.sub(r"\\\{\w+\\\}", ".+", re.escape(spec.prompts[template]))
        assert re.fullmatch(pattern, strip_image(human), re.DOTALL), (task, human)
        # The evaluation's instruction is the trained prompt without its placeholder.
        assert _instruction(held_out) == strip_image(human).strip()
