"""Batched greedy generation over benchmark items, with the raw replies kept for audit.

The evaluation code never sees a concrete model: it talks to two small protocols,
`TextModel` and `ImageModel`, so a test can hand it a deterministic fake and a user can hand
it any model. `HealthGPTText` / `HealthGPTImage` adapt the project's `HealthGPT` class
(per-example `generate_text(image, question)` / `generate_image(image, instruction)`) to them.

Prompts are rendered from one stated template per task (`TEMPLATES`); every reply is written,
with its prompt, parse and score, to a predictions Parquet table beside the scores.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import pyarrow as pa
from PIL import Image

from healthgpt.data.decode.imaging import decode_rgb as decode_image
from healthgpt.data.shards import ShardInfo, ShardWriter

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


# The stated prompt per task. `{question}` is the benchmark's question; `{options}` the
# lettered options, one per line ("A. ..."). The model adapter adds its own chat template and
# image token. The short-answer and letter instructions are LLaVA-1.5's evaluation prompts,
# which the medical VQA literature (LLaVA-Med, HuatuoGPT-Vision) evaluates with.
TEMPLATES: dict[str, str] = {
    # The question as the mixture renders VQA for training (healthgpt/data/mixture/tasks.py), so a
    # model trained here is asked in the form it learned.
    "vqa": "{question}",
    "mcq": (
        "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
    ),
}

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class TextItem:
    """One comprehension question, in the same form for every benchmark.

    `answer` is the gold text (VQA) or the gold letter (multiple choice); `answer_type` is
    closed | open | choice; `group` is the breakdown key (source subset, MMMU subject,
    OmniMedVQA dataset); `images` are encoded image bytes (PNG/JPEG), first one used.
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
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def template(self) -> str:
        return "mcq" if self.answer_type == "choice" else "vqa"


def render_prompt(item: TextItem) -> str:
    """The item's prompt from its task's template."""
    options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(item.options))
    return TEMPLATES[item.template].format(question=item.question.strip(), options=options)


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
        images = [decode_image(item.images[0] if item.images else None) for item in batch]
        replies = model.generate_text(images, prompts)
        if len(replies) != len(batch):
            raise RuntimeError(f"model returned {len(replies)} replies for {len(batch)} prompts")
        yield from zip(batch, prompts, (str(r) for r in replies), strict=True)


PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("group", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("answer_type", pa.string()),
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("answer", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("parsed", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("correct", pa.bool_()),
    ],
    metadata={"healthgpt.schema": "predictions/v1"},
)
"""One row per question: the raw reply next to how it was parsed (`parsed`, `rule`) and
scored (`score` in [0, 1], `correct` = full credit), so any number in a report can be
recomputed or disputed from this table alone."""


def prediction_row(
    item: TextItem, prompt: str, reply: str, parsed: str | None, rule: str, score: float
) -> dict[str, Any]:
    return {
        "id": item.id,
        "benchmark": item.benchmark,
        "group": item.group,
        "modality": item.modality,
        "answer_type": item.answer_type,
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "prompt": prompt,
        "prediction": reply,
        "parsed": parsed,
        "rule": rule,
        "score": float(score),
        "correct": score >= 1.0,
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
        self, model: Any, max_new_tokens: int = 64, notes: list[str] | None = None
    ) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.notes = list(notes or [])  # how the weights were loaded, for the report

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
    """`ImageModel` over a model with `generate_image(image, instruction) -> image`."""

    def __init__(self, model: Any, notes: list[str] | None = None) -> None:
        self.model = model
        self.notes = list(notes or [])

    def generate_image(
        self, images: list[Image.Image | None], instructions: list[str]
    ) -> list[Image.Image]:
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


Scorer = Callable[[TextItem, str], tuple[str | None, str, float]]


def predict_and_score(
    model: TextModel,
    items: Iterable[TextItem],
    scorer: Scorer,
    writer: ShardWriter,
    batch_size: int = 8,
) -> Iterator[tuple[TextItem, str | None, str, float]]:
    """Generate, score (`scorer` -> parsed, rule, score) and write one row per item; yields
    (item, parsed, rule, score) so the caller can tally without re-reading the table."""
    for item, prompt, reply in generate_replies(model, items, batch_size):
        parsed, rule, score = scorer(item, reply)
        writer.write(prediction_row(item, prompt, reply, parsed, rule, score))
        yield item, parsed, rule, score


__all__ = [
    "LETTERS",
    "PREDICTION_SCHEMA",
    "TEMPLATES",
    "EvalResult",
    "HealthGPTImage",
    "HealthGPTText",
    "ImageModel",
    "TextItem",
    "TextModel",
    "accepted_kwargs",
    "batched",
    "decode_image",
    "generate_replies",
    "greedy_kwargs",
    "prediction_row",
    "predict_and_score",
    "prediction_writer",
    "render_prompt",
]
