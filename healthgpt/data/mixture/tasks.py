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
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from healthgpt.data.decode.imaging import encode_png, to_display
from healthgpt.data.mixture.config import MixtureConfig, task_allows_source
from healthgpt.data.schema import TASK_FAMILIES, image_value, stable_id
from healthgpt.data.vocab import OPTION_LETTERS

IMAGE_TOKEN = "<image>"
TARGET_IMAGE_TOKEN = "<target_image>"
"""The generation answer. Trainers replace it with the target image's VQ codes."""

CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."

CAPTION_PROMPTS = (
    "Describe this image.",
    "Can you describe the image for me?",
    "What is shown in this image?",
    "Provide a brief description of the given image.",
    "Summarize the visual content of this medical image.",
    "Write a short caption for this image.",
)
REPORT_PROMPTS = (
    "Write the findings and impression for this {modality} image.",
    "Generate a radiology report for this {modality} image.",
    "Describe the findings in this {modality} image as a radiologist would.",
    "What are the findings and the impression of this {modality} study?",
    "Please write a report for this {modality} image.",
)
CONVERSION_PROMPTS = (
    "Convert this {src} image of the {part} into the corresponding {dst} image.",
    "Translate this {src} slice of the {part} into a {dst} slice.",
    "Generate the {dst} image that corresponds to this {src} image of the {part}.",
    "Synthesize a {dst} scan from this {src} scan of the {part}.",
)
SUPER_RESOLUTION_PROMPTS = (
    "Increase the resolution of this {modality} image by a factor of {factor}.",
    "This {modality} image is low resolution; reconstruct it at {factor}x higher resolution.",
    "Super-resolve this {modality} image ({factor}x).",
    "Restore the fine detail of this {factor}x downsampled {modality} image.",
)
RECONSTRUCTION_PROMPTS = (
    "Reconstruct this image.",
    "Reproduce the input image exactly.",
    "Encode and then reproduce this {modality} image.",
    "Output the same image as the input.",
)
TEXT_TO_IMAGE_PROMPTS = (
    "Generate a {part} X-ray image that matches this report:\n{text}",
    "Create a frontal {part} radiograph consistent with these findings and impression:\n{text}",
    "Draw the {part} X-ray described by this radiology report:\n{text}",
)

PROMPTS: dict[str, tuple[str, ...]] = {
    "caption": CAPTION_PROMPTS,
    "report": REPORT_PROMPTS,
    "ct_to_mri": CONVERSION_PROMPTS,
    "mri_to_ct": CONVERSION_PROMPTS,
    "super_resolution": SUPER_RESOLUTION_PROMPTS,
    "reconstruction": RECONSTRUCTION_PROMPTS,
    "text_to_image": TEXT_TO_IMAGE_PROMPTS,
}

# Record kinds that may feed each task. Reconstruction skips vqa (many questions share one
# image: they would all be duplicates) and pairs (their slices already feed conversion).
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "vqa_open": ("vqa",),
    "vqa_closed": ("vqa",),
    "vqa_choice": ("vqa",),
    "caption": ("caption",),
    "report": ("report",),
    "conversation": ("conversation",),
    "ct_to_mri": ("pair",),
    "mri_to_ct": ("pair",),
    "super_resolution": ("image",),
    "reconstruction": ("image", "caption", "conversation", "report"),
    "text_to_image": ("report",),
}
# Which images a task needs: the input (`image`) and, for generation, the target.
NEEDS_IMAGE = {t for t in TASK_FAMILIES if t != "text_to_image"}
NEEDS_TARGET = {t for t, family in TASK_FAMILIES.items() if family == "generation"}
YES_NO = ("yes", "no")
DEGRADATION = "PIL BICUBIC down by {f}, then BICUBIC up by {f} to the original size"


@dataclass(frozen=True)
class PlannedSample:
    """A sample a record will yield, decided without decoding images.

    `input_col` / `output_col` name the record column that becomes the sample's `image` /
    `target_image`; `degrade` marks the super-resolution input.
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
    )


def _plan_vqa(record, source, split, ctx, wanted):
    if not _has_image(record):
        return [], "missing_image"
    if not (record.get("question") or "").strip() or not str(record.get("answer") or "").strip():
        return [], "missing_question_or_answer"
    key = text_key(record["question"], record["answer"])
    common = {"input_col": "image", "output_col": None, "text": key}
    if not is_closed(record):
        tasks = ["vqa_open"] if "vqa_open" in wanted else []
    else:
        style = ctx.config.closed_question_style
        can_choose = len(ctx.answers.options(record, source)) >= 2
        tasks = []
        if style in ("choice", "both") and can_choose:
            tasks.append("vqa_choice")
        if style in ("plain", "both") or not can_choose:
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
    letters = list(OPTION_LETTERS[: len(options)])
    listed = "\n".join(
        f"{letter}. {option}" for letter, option in zip(letters, options, strict=True)
    )
    letter = letters[options.index(answer)]
    prompt = f"{record['question'].strip()}\n{listed}\n{CHOICE_INSTRUCTION}"
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
                turn["value"] = f"{IMAGE_TOKEN}\n{turn['value']}"
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
    meta: dict[str, Any] = {}
    if task in ("vqa_open", "vqa_closed"):
        human, gpt = record["question"].strip(), str(record["answer"]).strip()
    elif task == "vqa_choice":
        human, gpt, meta = _choice_turns(record, planned, source, ctx)
    elif task == "conversation":
        human = gpt = None
    else:
        human, meta["template"] = _prompt(task, planned, record, ctx.config)
        gpt = (record.get("text") or "").strip() if task in ("caption", "report") else None
    if task in NEEDS_TARGET:
        gpt = TARGET_IMAGE_TOKEN
    if human is None:
        turns = _passthrough_turns(record["conversations"])
    else:
        prefix = f"{IMAGE_TOKEN}\n" if planned.input_col else ""
        turns = [{"from": "human", "value": prefix + human}, {"from": "gpt", "value": gpt}]
    image = record[planned.input_col]["bytes"] if planned.input_col else None
    if planned.degrade:
        image = degraded if degraded is not None else degrade(image, ctx.config.sr_factor)
        meta["degradation"] = DEGRADATION.format(f=ctx.config.sr_factor)
    target = record[planned.output_col]["bytes"] if planned.output_col else None
    if question_type(record):
        meta["question_type"] = question_type(record)
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
