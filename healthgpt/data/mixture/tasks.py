"""Task builders: canonical records -> VL-Health samples (conversations, input and target image).

Building is split in two so the mixture can decide *what* to keep before paying for pixels:
`plan_record` says which samples a record yields (ids, tasks, which image goes where) without
touching image bytes; `render_sample` makes the row (prompt text, degraded image) for the few
that are kept. Every random choice (prompt template, choice options and their order) is seeded
by the config seed and the sample id, so a sample renders the same whatever the record order.

Comprehension
- vqa: `<image>\\n` + question -> answer. Closed questions may be rendered as single-choice
  questions (the paper's setup): yes/no questions offer yes and no; other closed questions
  offer the answer plus distractors from the closed training answers of the same source and
  question type. Open questions stay open.
- caption / report: a description prompt (from a fixed list) -> the text.
- conversation: passed through; records with more than one image (`meta.n_images > 1`) are
  dropped, as in the paper.

Generation (the answer is the `<target_image>` placeholder; the image is `target_image`)
- ct_to_mri / mri_to_ct: from registered pairs, both directions (image and target swapped).
- super_resolution: the input is the target degraded by a fixed, reproducible operator:
  PIL BICUBIC resize down by `sr_factor` (4) then BICUBIC back up to the original size.
- reconstruction: input and target are the same image.
- text_to_image: the findings and impression of a chest X-ray report -> the X-ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from healthgpt.data.decode.imaging import encode_png, to_display
from healthgpt.data.mixture.config import MixtureConfig, task_allows_source
from healthgpt.data.schema import image_value, stable_id
from healthgpt.data.tasks import (
    CLOSED_STYLE_TASKS,
    IMAGE_TOKEN,
    OPTION_LETTERS,
    PASSTHROUGH,
    PLAIN,
    PROMPTS,
    SINGLE_CHOICE,
    TARGET_IMAGE_TOKEN,
    TASK_FAMILIES,
    TASK_KINDS,
    TASK_SPECS,
    choice_prompt,
    strip_image,
    with_image,
)

# The templates by name, for callers that check a rendered prompt against its list.
CAPTION_PROMPTS = PROMPTS["caption"]
CONVERSION_PROMPTS = PROMPTS["ct_to_mri"]

YES_NO = ("yes", "no")
DEGRADATION = "PIL BICUBIC down by {f}, then BICUBIC up by {f} to the original size"


@dataclass(frozen=True)
class PlannedSample:
    """A sample a record will yield, decided without decoding images.

    `input_col` / `output_col` name the record column that becomes the sample's `image` /
    `target_image`; `degrade` marks the super-resolution input. `question_key` is the VQA
    question's `question_key` (None for other tasks), for decontamination by question.
    """

    id: str
    task: str
    split: str
    modality: str
    target_modality: str | None
    direction: str
    input_col: str | None
    output_col: str | None
    text_key: int
    degrade: bool = False
    declared: bool = False  # the record states its task and its own prompt (VL-Health rows)
    question_key: int | None = None


@dataclass
class AnswerSets:
    """Closed answers of the training split per (source, question type): choice distractors."""

    answers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, record: dict[str, Any], source: str) -> None:
        if record.get("kind") == "vqa" and record.get("split") == "train" and is_closed(record):
            answer = _norm(record.get("answer"))
            if answer:
                self.answers[(source, question_type(record))].add(answer)

    def options(self, record: dict[str, Any], source: str) -> list[str]:
        """All candidate answers for a closed question (its own answer included), sorted."""
        answer = _norm(record.get("answer"))
        if answer in YES_NO:
            return list(YES_NO)
        pool = self.answers.get((source, question_type(record)), set())
        return sorted(pool | {answer}) if answer else []


@dataclass
class TaskContext:
    config: MixtureConfig
    answers: AnswerSets


def _norm(text: Any) -> str:
    return " ".join(str(text or "").split()).lower()


def meta_of(record: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(record.get("meta") or "{}")
    except (TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def question_type(record: dict[str, Any]) -> str:
    meta = meta_of(record)
    return str(meta.get("question_type") or meta.get("content_type") or "")


def is_closed(record: dict[str, Any]) -> bool:
    answer_type = record.get("answer_type")
    if answer_type in ("closed", "open"):
        return answer_type == "closed"
    return _norm(record.get("answer")) in YES_NO


def seeded_index(seed: int, sample_id: str, salt: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{salt}\x1f{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def sample_id(record_id: str, task: str) -> str:
    return stable_id("vl-health", record_id, task)


def text_key(*parts: Any) -> int:
    """64-bit hash of the normalized text: what makes two samples on one image different."""
    joined = "\x1f".join(_norm(p) for p in parts)
    return int.from_bytes(hashlib.sha256(joined.encode()).digest()[:8], "big")


def question_key(question: str) -> int:
    """The VQA question's identity, answer left out: decontamination by question and the leak
    check both match an evaluation question by it (the check reads the question from `meta`)."""
    return text_key(question)


def _n_images(record: dict[str, Any]) -> int:
    try:
        return int(meta_of(record).get("n_images") or 1)
    except (TypeError, ValueError):
        return 1


def _has_image(record: dict[str, Any], column: str = "image") -> bool:
    value = record.get(column)
    return bool(value and value.get("bytes"))


def plan_record(
    record: dict[str, Any], source: str, split: str, ctx: TaskContext
) -> tuple[list[PlannedSample], str | None]:
    """The samples `record` yields, or (no samples, the reason it yields none)."""
    config = ctx.config
    kind = record["kind"]
    if config.drop_multi_image and _n_images(record) > 1:
        return [], "multi_image"
    declared = declared_task(record)
    if declared is not None:
        return _plan_declared(record, source, split, config, declared)
    wanted = [
        t for t in config.tasks if kind in TASK_KINDS[t] and task_allows_source(config, t, source)
    ]
    if not wanted:
        return [], "no_task_for_kind"
    builder = _PLANNERS[kind]
    return builder(record, source, split, ctx, wanted)


def _planned(
    record: dict[str, Any],
    task: str,
    split: str,
    *,
    input_col: str | None,
    output_col: str | None,
    text: int,
    question: int | None = None,
    modality: str | None = None,
    target_modality: str | None = None,
    direction: str = "image->text",
    degrade: bool = False,
) -> PlannedSample:
    return PlannedSample(
        id=sample_id(record["id"], task),
        task=task,
        split=split,
        modality=modality or record["modality"],
        target_modality=target_modality,
        direction=direction,
        input_col=input_col,
        output_col=output_col,
        text_key=text,
        degrade=degrade,
        question_key=question,
    )


def declared_task(record: dict[str, Any]) -> str | None:
    """The generation task a record states it is (`meta.task`, as the released VL-Health
    generation rows do; an unknown name is kept, and refused when planned), or None for
    records whose kind decides their tasks."""
    task = meta_of(record).get("task")
    if task is None or TASK_FAMILIES.get(task) == "comprehension":
        return None  # comprehension rows are planned from their kind (vqa, conversation, ...)
    return str(task)


def _plan_declared(record, source, split, config, task):
    """A record that is one generation sample already (input, target and instruction given):
    planned as that task, its own input and target, no degradation."""
    if TASK_FAMILIES.get(task) != "generation":
        return [], "unknown_declared_task"
    if task not in config.tasks or not task_allows_source(config, task, source):
        return [], "no_task_for_kind"
    needs_input = TASK_SPECS[task].needs_image
    target = "target_image" if _has_image(record, "target_image") else None
    if target is None and (task == "reconstruction" or not needs_input):
        target = "image" if _has_image(record) else None  # the one image is the output
    if target is None or (needs_input and not _has_image(record)):
        return [], "missing_image"
    text = _declared_prompt(record)
    if not needs_input and not (text or (record.get("text") or "").strip()):
        return [], "missing_text"
    modality = record["modality"]
    target_modality = record.get("target_modality") or modality
    source_side = modality if needs_input else "text"
    planned = _planned(
        record,
        task,
        split,
        input_col="image" if needs_input else None,
        output_col=target,
        text=text_key(text or record.get("text")),
        target_modality=target_modality,
        direction=f"{source_side}->{target_modality}",
    )
    return [replace(planned, declared=bool(text))], None


def _declared_prompt(record: dict[str, Any]) -> str:
    """The instruction a declared-task record carries: its question, else its first human
    turn without the image placeholder; empty when it has none (a template is used)."""
    question = (record.get("question") or "").strip()
    if question:
        return question
    for turn in record.get("conversations") or []:
        if turn.get("from") == "human":
            return strip_image(turn.get("value") or "").replace(IMAGE_TOKEN, "").strip()
    return ""


def _plan_vqa(record, source, split, ctx, wanted):
    if not _has_image(record):
        return [], "missing_image"
    if not (record.get("question") or "").strip() or not str(record.get("answer") or "").strip():
        return [], "missing_question_or_answer"
    key = text_key(record["question"], record["answer"])
    common = {
        "input_col": "image",
        "output_col": None,
        "text": key,
        "question": question_key(record["question"]),
    }
    if not is_closed(record):
        tasks = ["vqa_open"] if "vqa_open" in wanted else []
    else:
        styled = CLOSED_STYLE_TASKS[ctx.config.closed_question_style]
        can_choose = len(ctx.answers.options(record, source)) >= 2
        # A question with fewer than two options cannot be single choice: asked plainly.
        tasks = [t for t in styled if can_choose or t != "vqa_choice"]
        if not can_choose and "vqa_closed" not in tasks:
            tasks.append("vqa_closed")
        tasks = [t for t in tasks if t in wanted]
    if not tasks:
        return [], "no_task_for_kind"
    return [_planned(record, t, split, **common) for t in tasks], None


def _plan_description(record, source, split, ctx, wanted):
    if not _has_image(record):
        return [], "missing_image"
    text = (record.get("text") or "").strip()
    samples = []
    if text and record["kind"] in wanted:  # the task is named like the kind
        samples.append(
            _planned(
                record,
                record["kind"],
                split,
                input_col="image",
                output_col=None,
                text=text_key(text),
            )
        )
    if (
        text
        and record["kind"] == "report"
        and "text_to_image" in wanted
        and record["modality"] == "X-Ray"
    ):
        samples.append(
            _planned(
                record,
                "text_to_image",
                split,
                input_col=None,
                output_col="image",
                text=text_key(text),
                target_modality="X-Ray",
                direction="text->X-Ray",
            )
        )
    samples += _plan_reconstruction(record, split, wanted)
    if samples:
        return samples, None
    return [], "no_task_for_kind" if text else "missing_text"


def _plan_reconstruction(record, split, wanted):
    if "reconstruction" not in wanted or not _has_image(record):
        return []
    return [
        _planned(
            record,
            "reconstruction",
            split,
            input_col="image",
            output_col="image",
            text=text_key(""),
            target_modality=record["modality"],
            direction="image->image",
        )
    ]


def _plan_conversation(record, source, split, ctx, wanted):
    if not _has_image(record):
        return [], "missing_image"
    turns = record.get("conversations") or []
    if not turns:
        return [], "missing_conversation"
    samples = []
    if "conversation" in wanted:
        samples.append(
            _planned(
                record,
                "conversation",
                split,
                input_col="image",
                output_col=None,
                text=text_key(*(t.get("value") for t in turns)),
            )
        )
    samples += _plan_reconstruction(record, split, wanted)
    return samples, None


def _plan_image(record, source, split, ctx, wanted):
    if not _has_image(record):
        return [], "missing_image"
    samples = []
    if "super_resolution" in wanted:
        samples.append(
            _planned(
                record,
                "super_resolution",
                split,
                input_col="image",
                output_col="image",
                text=text_key(""),
                target_modality=record["modality"],
                direction="low_res->high_res",
                degrade=True,
            )
        )
    samples += _plan_reconstruction(record, split, wanted)
    return samples, None


CONVERSIONS = {("MRI", "CT"): "mri_to_ct", ("CT", "MRI"): "ct_to_mri"}


def _plan_pair(record, source, split, ctx, wanted):
    if not (_has_image(record) and _has_image(record, "target_image")):
        return [], "missing_image"
    forward = CONVERSIONS.get((record["modality"], record.get("target_modality")))
    if forward is None:
        return [], "unsupported_pair"
    src, dst = record["modality"], record["target_modality"]
    reverse = CONVERSIONS[(dst, src)]
    samples = []
    if forward in wanted:
        samples.append(
            _planned(
                record,
                forward,
                split,
                input_col="image",
                output_col="target_image",
                text=text_key(""),
                target_modality=dst,
                direction=f"{src}->{dst}",
            )
        )
    if reverse in wanted:
        samples.append(
            _planned(
                record,
                reverse,
                split,
                input_col="target_image",
                output_col="image",
                text=text_key(""),
                modality=dst,
                target_modality=src,
                direction=f"{dst}->{src}",
            )
        )
    return (samples, None) if samples else ([], "no_task_for_kind")


_PLANNERS = {
    "vqa": _plan_vqa,
    "caption": _plan_description,
    "report": _plan_description,
    "conversation": _plan_conversation,
    "image": _plan_image,
    "pair": _plan_pair,
}


def degraded_image(image: Image.Image, factor: int = 4) -> Image.Image:
    """BICUBIC down by `factor`, BICUBIC back up to the original size (grey or RGB)."""
    image = to_display(image)
    width, height = image.size
    small = image.resize((max(1, width // factor), max(1, height // factor)), Image.BICUBIC)
    return small.resize((width, height), Image.BICUBIC)


def degrade(png: bytes, factor: int = 4) -> bytes:
    """The super-resolution input as PNG: `degraded_image` of the decoded target."""
    image = Image.open(io.BytesIO(png))
    image.load()
    return encode_png(degraded_image(image, factor), None)


def _modality_label(record: dict[str, Any], modality: str) -> str:
    sequence = meta_of(record).get("sequence")
    return f"{sequence}-weighted MRI" if modality == "MRI" and sequence else modality


def _choice_turns(record, planned, source, ctx) -> tuple[str, str, dict[str, Any]]:
    config = ctx.config
    answer = _norm(record["answer"])
    candidates = ctx.answers.options(record, source)
    rng = random.Random(f"{config.seed}\x1fchoice\x1f{planned.id}")
    distractors = [c for c in candidates if c != answer]
    distractors = rng.sample(distractors, min(len(distractors), config.max_choice_options - 1))
    options = [answer, *distractors]
    rng.shuffle(options)
    letter = OPTION_LETTERS[options.index(answer)]
    prompt = choice_prompt(record["question"], options)
    return prompt, letter, {"options": options, "answer": answer, "answer_letter": letter}


def _prompt(task: str, planned: PlannedSample, record: dict[str, Any], config: MixtureConfig):
    templates = PROMPTS[task]
    index = seeded_index(config.seed, planned.id, "prompt", len(templates))
    part = record.get("body_part") or ("chest" if task == "text_to_image" else "body")
    text = templates[index].format(
        modality=_modality_label(record, planned.modality),
        src=planned.modality,
        dst=planned.target_modality,
        part=part,
        factor=config.sr_factor,
        text=(record.get("text") or "").strip(),
    )
    return text, index


def _passthrough_turns(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LLaVA turns as they are; the `<image>` token is added to the first human turn only
    when no turn has it, since trainers locate the image by it."""
    turns = [{"from": t["from"], "value": t["value"]} for t in conversations]
    if not any(IMAGE_TOKEN in (t["value"] or "") for t in turns):
        for turn in turns:
            if turn["from"] == "human":
                turn["value"] = with_image(turn["value"])
                break
    return turns


def render_sample(
    record: dict[str, Any],
    planned: PlannedSample,
    source: str,
    ctx: TaskContext,
    degraded: bytes | None = None,
) -> dict[str, Any]:
    """The SAMPLE_SCHEMA row of a planned sample (prompt, answer, input and target image).

    `degraded` is the super-resolution input when the caller computed it already (in a
    worker process); otherwise it is computed here.
    """
    task = planned.task
    spec = TASK_SPECS[task]
    meta: dict[str, Any] = {}
    if spec.prompt == PLAIN:
        human, gpt = record["question"].strip(), str(record["answer"]).strip()
    elif spec.prompt == SINGLE_CHOICE:
        human, gpt, meta = _choice_turns(record, planned, source, ctx)
    elif spec.prompt == PASSTHROUGH:
        human = gpt = None
    elif planned.declared:
        human = _declared_prompt(record)
    else:
        human, meta["template"] = _prompt(task, planned, record, ctx.config)
        gpt = None if spec.needs_target else (record.get("text") or "").strip()
    if spec.needs_target:
        gpt = TARGET_IMAGE_TOKEN
    if human is None:
        turns = _passthrough_turns(record["conversations"])
    else:
        human = with_image(human) if planned.input_col else human
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    image = record[planned.input_col]["bytes"] if planned.input_col else None
    if planned.degrade:
        image = degraded if degraded is not None else degrade(image, ctx.config.sr_factor)
        meta["degradation"] = DEGRADATION.format(f=ctx.config.sr_factor)
    target = record[planned.output_col]["bytes"] if planned.output_col else None
    if question_type(record):
        meta["question_type"] = question_type(record)
    if planned.question_key is not None:
        meta["question"] = record["question"].strip()  # the leak check's `question_key` input
    return {
        "id": planned.id,
        "record_id": record["id"],
        "source": source,
        "split": planned.split,
        "task": task,
        "task_family": TASK_FAMILIES[task],
        "direction": planned.direction,
        "modality": planned.modality,
        "target_modality": planned.target_modality,
        "body_part": record.get("body_part"),
        "subject_id": record.get("subject_id"),
        "image": image_value(image),
        "target_image": image_value(target),
        "conversations": turns,
        "answer_type": record.get("answer_type") if record["kind"] == "vqa" else None,
        "meta": json.dumps(meta, sort_keys=True) if meta else None,
    }
