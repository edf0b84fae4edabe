"""The task vocabulary (`healthgpt.data.tasks`) is the one table the rest reads, and the one
modality word table serves both its readings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from healthgpt.data import tasks as vocabulary
from healthgpt.data.schema import KINDS, MODALITIES, SAMPLE_SCHEMA
from healthgpt.data.vocab import first_modality_in, modality_from_text
from healthgpt.eval.mcq import normalize_benchmark_modality

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", vocabulary.TASK_SPECS.values(), ids=lambda s: s.name)
def test_every_task_is_declared_consistently(spec):
    assert spec.family in vocabulary.FAMILIES
    assert spec.kinds and set(spec.kinds) <= set(KINDS)
    assert bool(spec.prompts) == (spec.prompt == vocabulary.TEMPLATE)
    assert (spec.answer == vocabulary.ANSWER_IMAGE) == (spec.family == vocabulary.GENERATION)
    assert (vocabulary.TARGET_IMAGE_TOKEN in spec.placeholders) == spec.needs_target
    assert (vocabulary.IMAGE_TOKEN in spec.placeholders) == spec.needs_image
    for template in spec.prompts:  # a template never writes a placeholder itself
        assert not any(p in template for p in vocabulary.PLACEHOLDERS)


def test_closed_styles_name_vqa_tasks_with_an_evaluation_form():
    for tasks in vocabulary.CLOSED_STYLE_TASKS.values():
        assert set(tasks) <= set(vocabulary.VQA_TASKS) - {"vqa_open"}
        assert all(vocabulary.EVAL_FORMS[t] for t in tasks)
    assert vocabulary.EVAL_FORMS["vqa_choice"] == vocabulary.SINGLE_CHOICE


def test_closed_question_form_is_the_form_of_the_styles_first_task():
    forms = {style: vocabulary.closed_question_form(style) for style in vocabulary.CLOSED_STYLES}
    single, plain = vocabulary.SINGLE_CHOICE, vocabulary.PLAIN
    assert forms == {"plain": plain, "choice": single, "both": single}


def test_choice_prompt_letters_every_option_and_ends_with_the_instruction():
    prompt = vocabulary.choice_prompt("  Which side? ", ["left", "right", "both"])
    assert prompt == f"Which side?\nA. left\nB. right\nC. both\n{vocabulary.CHOICE_INSTRUCTION}"
    assert vocabulary.strip_image(vocabulary.with_image(prompt)) == prompt


# Publisher formats (readers and the bundled samples that imitate them) spell the LLaVA
# placeholder as their publishers do; everything after ingestion reads the vocabulary.
_PUBLISHER_FORMATS = ("healthgpt/data/sources/", "healthgpt/data/samples/")


def _literals(pattern: str) -> list[str]:
    """Source lines under healthgpt/ and pipelines/ that spell `pattern` as a string literal,
    outside the vocabulary module and the publisher formats."""
    found = []
    for path in [*(ROOT / "healthgpt").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]:
        relative = path.relative_to(ROOT).as_posix()
        if relative == "healthgpt/data/tasks.py" or relative.startswith(_PUBLISHER_FORMATS):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(pattern, code) and not code.strip().startswith(('"', "`", "-", "<")):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_placeholders_and_instruction_are_spelled_only_in_the_vocabulary():
    assert not _literals(r"[\"']<image>"), "use data.tasks.IMAGE_TOKEN"
    assert not _literals(r"[\"']<target_image>"), "use data.tasks.TARGET_IMAGE_TOKEN"
    assert not _literals(r"Answer with the option's letter"), "use data.tasks.CHOICE_INSTRUCTION"
    assert not _literals(r"[\"']single choice"), "use data.tasks.SINGLE_CHOICE"


def test_sample_schema_task_columns_come_from_the_vocabulary():
    assert SAMPLE_SCHEMA.field("task_family").type == SAMPLE_SCHEMA.field("task").type
    assert set(vocabulary.TASK_FAMILIES.values()) == set(vocabulary.FAMILIES)


@pytest.mark.parametrize(
    ("text", "single", "first"),
    [
        ("CT(Computed Tomography)", "CT", "CT"),
        ("MR (Mag-netic Resonance Imaging)", "MRI", "MRI"),
        ("['Microscopic Images']", "Microscopy", "Microscopy"),
        ("Fundus Photography", "Fundus", "Fundus"),
        ("Is this a CT or an MRI?", None, "CT"),  # two named: the single reading says nothing
        ("a photograph of the lesion", None, "Other"),
        ("optical coherence tomography of the retina", None, "OCT"),
    ],
)
def test_one_modality_table_two_readings(text, single, first):
    assert modality_from_text(text) == single
    assert first_modality_in(text) == first == normalize_benchmark_modality(text)
    assert first in MODALITIES
