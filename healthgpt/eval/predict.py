"""Batched greedy generation over benchmark items, with the raw replies kept for audit.

The evaluation code never sees a concrete model: it talks to two small protocols,
`TextModel` and `ImageModel`, so a test can hand it a deterministic fake and a user can hand
it any model. `HealthGPTText` / `HealthGPTImage` adapt the project's `HealthGPT` class
(per-example `generate_text(image, question)` / `generate_image(image, instruction)`) to them.

A question's prompt is the form its model was trained on where the task vocabulary
(`healthgpt.data.tasks`) has one (VQA: `TextItem.prompt`, rendered by `vqa.trained_form`),
else the stated template of its kind (`TEMPLATES`, whose single-choice form is the training
one). A question with several images is shown all of them, in order, side by side
in one picture (`combine_images`), since the model takes one image per prompt. Every reply is
written, with its prompt, parse and both scores, to a predictions Parquet table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import pyarrow as pa
from PIL import Image, ImageDraw

from healthgpt.data.decode.imaging import decode_rgb as decode_image
from healthgpt.data.shards import ShardInfo, ShardWriter
from healthgpt.data.tasks import CHOICE_TEMPLATE, OPTION_LETTERS, PLAIN, choice_prompt

T = TypeVar("T")


@runtime_checkable
class TextModel(Protocol):
    """Answers one prompt per image, a batch at a time, greedily (deterministic)."""

    def generate_text(self, images: list[Image.Image | None], prompts: list[str]) -> list[str]: ...


@runtime_checkable
class ImageModel(Protocol):
    """Produces one image per (input image, instruction), a batch at a time."""

    def generate_image(
        self, images: list[Image.Image | None], instructions: list[str]
    ) -> list[Image.Image]: ...


# The stated prompt of a question without a trained form. `{question}` is the benchmark's
# question; `{options}` the lettered options, one per line ("A. ...") as the training's single
# choice lists them, followed by its instruction. "open" is the short-answer prompt of MMMU's
# official configuration (LLaVA-1.5's), used for MMMU's open questions.
TEMPLATES: dict[str, str] = {
    "vqa": "{question}",
    "mcq": CHOICE_TEMPLATE,
    "open": "{question}\nAnswer the question using a single word or phrase.",
}

LETTERS = OPTION_LETTERS  # the option letters prompts write and `mcq.parse_choice` reads


def check_option_count(count: int, what: str = "a question") -> None:
    """Reject more options than there are letters: the extra ones could be neither asked
    nor parsed (a mixture with `max_choice_options` above this trains on unreadable forms)."""
    if count > len(LETTERS):
        raise ValueError(
            f"{what} has {count} options; at most {len(LETTERS)} ({LETTERS[0]}-{LETTERS[-1]}) "
            "can be asked and parsed"
        )


@dataclass(frozen=True)
class TextItem:
    """One comprehension question, in the same form for every benchmark.

    `answer` is the gold text (VQA, MMMU open) or the gold letter (multiple choice);
    `answer_type` is closed | open | choice; `group` is the breakdown key (source subset, MMMU
    subject, OmniMedVQA dataset); `images` are encoded image bytes (PNG/JPEG), all shown, in
    order. `prompt`, when set, is the exact prompt (the trained form); `options` are the
    lettered options the prompt lists; `source` names where the question comes from and
    `form` how it was asked (plain, single choice, short answer).
    """

    id: str
    benchmark: str
    question: str
    answer: str
    answer_type: str
    modality: str = "Other"
    group: str = ""
    images: tuple[bytes, ...] = ()
    options: tuple[str, ...] = ()
    prompt: str = ""
    source: str = ""
    form: str = PLAIN
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def template(self) -> str:
        if self.answer_type == "choice":
            return "mcq"
        return "open" if self.form == "short answer" else "vqa"


def render_prompt(item: TextItem) -> str:
    """The item's prompt: its trained form when it has one, else its kind's template."""
    if item.prompt:
        return item.prompt
    check_option_count(len(item.options), f"item {item.id}")
    if item.template == "mcq":
        return choice_prompt(item.question, item.options)
    return TEMPLATES[item.template].format(question=item.question.strip())


@dataclass(frozen=True)
class Scored:
    """How one reply was scored: what was parsed, by which rule, the project's (strict)
    score in [0, 1], and LLaVA-Med's score where that convention applies (VQA)."""

    parsed: str | None
    rule: str
    score: float
    score_llava_med: float | None = None


LABEL_H = 14


def combine_images(images: list[Image.Image]) -> Image.Image:
    """Several images side by side, in order, at a common height, each under its label
    ("image 1", ...), the way the question refers to them; one image is returned as it is."""
    if len(images) == 1:
        return images[0]
    height = min(448, max(image.height for image in images))
    scaled = [i.resize((max(1, round(i.width * height / i.height)), height)) for i in images]
    canvas = Image.new("RGB", (sum(i.width for i in scaled), height + LABEL_H), "white")
    draw, left = ImageDraw.Draw(canvas), 0
    for number, image in enumerate(scaled, 1):
        draw.text((left + 2, 1), f"image {number}", fill="black")
        canvas.paste(image, (left, LABEL_H))
        left += image.width
    return canvas


def item_image(item: TextItem) -> Image.Image | None:
    """What the model is shown for an item: none, its image, or all its images combined."""
    images = [decode_image(data) for data in item.images]
    present = [image for image in images if image is not None]
    return combine_images(present) if present else None


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter); lazy, so memory is bounded."""
    if size <= 0:
        raise ValueError("batch size must be positive")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate_replies(
    model: TextModel, items: Iterable[TextItem], batch_size: int = 8
) -> Iterator[tuple[TextItem, str, str]]:
    """(item, prompt, reply) for every item, generating `batch_size` at a time."""
    for batch in batched(items, batch_size):
        prompts = [render_prompt(item) for item in batch]
        images = [item_image(item) for item in batch]
        replies = model.generate_text(images, prompts)
        if len(replies) != len(batch):
            raise RuntimeError(f"model returned {len(replies)} replies for {len(batch)} prompts")
        yield from zip(batch, prompts, (str(r) for r in replies), strict=True)


PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("group", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("answer_type", pa.string()),
        pa.field("form", pa.string()),
        pa.field("n_images", pa.int32()),
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("answer", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("parsed", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("correct", pa.bool_()),
        pa.field("score_llava_med", pa.float64()),
    ],
    metadata={"healthgpt.schema": "predictions/v2"},
)
"""One row per question: where it comes from (`source`), how it was asked (`form`,
`prompt`, `n_images`), the raw reply next to how it was parsed (`parsed`, `rule`) and scored:
`score` in [0, 1] by the project's strict scorer (`correct` = full credit) and
`score_llava_med` by LLaVA-Med's convention (VQA only), so any number in a report can be
recomputed or disputed from this table alone."""


def prediction_row(item: TextItem, prompt: str, reply: str, scored: Scored) -> dict[str, Any]:
    return {
        "id": item.id,
        "benchmark": item.benchmark,
        "source": item.source or item.benchmark,
        "group": item.group,
        "modality": item.modality,
        "answer_type": item.answer_type,
        "form": item.form,
        "n_images": len(item.images),
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "prompt": prompt,
        "prediction": reply,
        "parsed": scored.parsed,
        "rule": scored.rule,
        "score": float(scored.score),
        "correct": scored.score >= 1.0,
        "score_llava_med": scored.score_llava_med,
    }


def prediction_writer(directory: Path, prefix: str = "predictions") -> ShardWriter:
    """A streaming writer of prediction rows (no image columns, so no HF image metadata)."""
    return ShardWriter(directory, PREDICTION_SCHEMA, prefix=prefix, hf_images=False)


# ------------------------------------------------------------------------- real model


def accepted_kwargs(fn: Callable[..., Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The subset of `wanted` keyword arguments that `fn` declares (or all, for **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(wanted)
    return {k: v for k, v in wanted.items() if k in params}


def greedy_kwargs(fn: Callable[..., Any], max_new_tokens: int) -> dict[str, Any]:
    """Greedy-decoding arguments, passed only where the model's method accepts them."""
    return accepted_kwargs(fn, {"max_new_tokens": max_new_tokens, "do_sample": False})


class HealthGPTText:
    """`TextModel` over a model with `generate_text(image, question)` (one example per call).

    A model that also offers `generate_text_batch(images, questions)` is called batched.
    """

    def __init__(
        self,
        model: Any,
        max_new_tokens: int = 64,
        notes: list[str] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.notes = list(notes or [])  # how the weights were loaded, for the report
        self.checkpoint = checkpoint  # the pipeline checkpoint file, for its model card

    def generate_text(self, images: list[Image.Image | None], prompts: list[str]) -> list[str]:
        batch_fn = getattr(self.model, "generate_text_batch", None)
        if callable(batch_fn):
            kwargs = greedy_kwargs(batch_fn, self.max_new_tokens)
            return [str(r) for r in batch_fn(images, prompts, **kwargs)]
        kwargs = greedy_kwargs(self.model.generate_text, self.max_new_tokens)
        return [
            str(self.model.generate_text(image, prompt, **kwargs))
            for image, prompt in zip(images, prompts, strict=True)
        ]


class HealthGPTImage:
    """`ImageModel` over a model with `generate_image(image, instruction) -> image`.

    A model that also offers `generate_image_batch(images, instructions)` is called batched.
    """

    def __init__(
        self, model: Any, notes: list[str] | None = None, checkpoint: str | None = None
    ) -> None:
        self.model = model
        self.notes = list(notes or [])
        self.checkpoint = checkpoint  # the pipeline checkpoint file, for its model card

    def generate_image(
        self, images: list[Image.Image | None], instructions: list[str]
    ) -> list[Image.Image]:
        batch_fn = getattr(self.model, "generate_image_batch", None)
        if callable(batch_fn):
            return [_as_pil(image) for image in batch_fn(images, instructions)]
        return [
            _as_pil(self.model.generate_image(image, instruction))
            for image, instruction in zip(images, instructions, strict=True)
        ]


def _as_pil(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    import numpy as np

    return Image.fromarray(np.asarray(value))


@dataclass
class EvalResult:
    """What one evaluation produced: per-benchmark summaries, its prediction shards, notes."""

    benchmarks: dict[str, dict[str, Any]]
    shards: list[ShardInfo]
    notes: list[str] = field(default_factory=list)


Scorer = Callable[[TextItem, str], Scored]


def predict_and_score(
    model: TextModel,
    items: Iterable[TextItem],
    scorer: Scorer,
    writer: ShardWriter,
    batch_size: int = 8,
) -> Iterator[tuple[TextItem, Scored]]:
    """Generate, score and write one row per item; yields (item, scored) so the caller can
    tally without re-reading the table."""
    for item, prompt, reply in generate_replies(model, items, batch_size):
        scored = scorer(item, reply)
        writer.write(prediction_row(item, prompt, reply, scored))
        yield item, scored


__all__ = [
    "LETTERS",
    "check_option_count",
    "PREDICTION_SCHEMA",
    "TEMPLATES",
    "EvalResult",
    "HealthGPTImage",
    "HealthGPTText",
    "ImageModel",
    "Scored",
    "TextItem",
    "TextModel",
    "accepted_kwargs",
    "batched",
    "combine_images",
    "decode_image",
    "generate_replies",
    "greedy_kwargs",
    "prediction_row",
    "predict_and_score",
    "prediction_writer",
    "render_prompt",
]
