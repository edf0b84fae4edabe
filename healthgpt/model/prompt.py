"""Conversations -> ``input_ids``/``labels``, without any tokenizer chat template.

Layout (the "MPT" separator style HealthGPT uses for Phi-3/Phi-4)::

    [BOS] system sep  user msg sep  assistant msg sep  user msg sep ...

Labels cover each assistant message and its closing ``sep`` (the model must learn to stop);
everything else is ``IGNORE_INDEX``. Each ``<image>`` placeholder becomes
``num_image_tokens`` positions holding ``IMAGE_TOKEN_ID``, which the model fills with
projected patch features, so sequence lengths are final here and padding is plain. Every
segment is tokenized on its own, so the training layout and the inference prompt
(:meth:`ConversationFormatter.prompt`) match token for token.

Truncation is never silent. A conversation longer than ``max_length`` is cut only at the end
of an assistant turn, so every kept answer (and every image) is whole: a multi-turn
conversation keeps its longest prefix of whole turns that fits, and the number of answers it
lost is reported (:class:`Fit`). A conversation whose first answer or image does not fit, or
that has no answer at all, is dropped: :meth:`ConversationFormatter.__call__` raises
:class:`SampleDropped` with a reason from ``DROP_REASONS``, and :meth:`ConversationFormatter.fit`
says the same without raising (the training stages count the reasons before they start, so a
dropped sample never reaches a batch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from healthgpt.data.tasks import SPEAKER_ROLES
from healthgpt.model.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_ID
from healthgpt.model.tokenizer import TextTokenizer


@dataclass(frozen=True)
class PromptStyle:
    system: str
    user: str
    assistant: str
    sep: str

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Marker strings (``<|...|>``) a byte-level tokenizer should keep whole."""
        text = self.system + self.user + self.assistant + self.sep
        return tuple(dict.fromkeys(re.findall(r"<\|[^<>\s]+\|>", text)))


# HealthGPT's conversation templates (llava/conversation.py: phi3_instruct, phi4_instruct).
PHI3 = PromptStyle(
    system="<|system|>\nYou are a helpful AI assistant.",
    user="\n<|user|>\n",
    assistant="\n<|assistant|>\n",
    sep="<|end|>",
)
PHI4 = PromptStyle(
    system="<|im_start|>system<|im_sep|>\n"
    "You are a medieval knight and must provide explanations to modern people.",
    user="\n<|im_start|>user<|im_sep|>\n",
    assistant="\n<|im_start|>assistant<|im_sep|>\n",
    sep="<|im_end|>",
)
CHATML = PromptStyle(
    system="<|im_start|>system\nYou are a helpful AI assistant.",
    user="\n<|im_start|>user\n",
    assistant="\n<|im_start|>assistant\n",
    sep="<|im_end|>",
)
PROMPT_STYLES = {"phi3": PHI3, "phi4": PHI4, "chatml": CHATML}

ROLES = SPEAKER_ROLES  # the speakers the readers accept are the ones formatted here

NO_ANSWER = "no_answer"  # no assistant turn: nothing to learn from
IMAGE_CUT = "image_cut"  # max_length falls inside (or before) an input image's positions
ANSWER_CUT = "answer_cut"  # max_length falls inside the first answer
DROP_REASONS = (NO_ANSWER, IMAGE_CUT, ANSWER_CUT)


class SampleDropped(ValueError):
    """A conversation that yields no training sample; ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Fit:
    """How one conversation fits ``max_length``.

    ``length``: tokens of the whole conversation; ``kept``: tokens kept (0 when dropped);
    ``labels``: answer labels kept; ``turns_dropped``: whole assistant turns cut off at a turn
    boundary; ``reason``: why the conversation is dropped (None when kept)."""

    length: int
    kept: int
    labels: int
    turns_dropped: int = 0
    reason: str | None = None

    @property
    def dropped(self) -> bool:
        return self.reason is not None


class ConversationFormatter:
    """Builds model inputs from ``[{"from": "human"|"gpt", "value": str}, ...]``."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        style: PromptStyle,
        num_image_tokens: int,
        max_length: int | None = None,
    ) -> None:
        self.tokenizer, self.style = tokenizer, style
        self.num_image_tokens, self.max_length = num_image_tokens, max_length
        self._cache: dict[str, list[int]] = {}

    def _fixed(self, text: str) -> list[int]:
        """Ids of a template string (cached: these repeat in every sample)."""
        if text not in self._cache:
            self._cache[text] = self.tokenizer.encode(text)
        return self._cache[text]

    def _message(self, text: str) -> list[int]:
        ids: list[int] = []
        for i, part in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if i:
                ids.extend([IMAGE_TOKEN_ID] * self.num_image_tokens)
            if part:
                ids.extend(self.tokenizer.encode(part))
        return ids

    def _head(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + self._fixed(self.style.system + self.style.sep)

    def __call__(self, conversations: Sequence[Mapping[str, str]]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``labels`` (1-D long tensors) of one training sample, cut to
        ``max_length`` at a turn boundary; raises :class:`SampleDropped` if nothing fits."""
        input_ids, labels, ends = self._encode(conversations)
        fit = self._fit(input_ids, labels, ends)
        if fit.dropped:
            raise SampleDropped(fit.reason, self._explain(fit))
        return {
            "input_ids": torch.tensor(input_ids[: fit.kept], dtype=torch.long),
            "labels": torch.tensor(labels[: fit.kept], dtype=torch.long),
        }

    def fit(self, conversations: Sequence[Mapping[str, str]]) -> Fit:
        """What :meth:`__call__` would keep of ``conversations``, without raising for length."""
        return self._fit(*self._encode(conversations))

    def _explain(self, fit: Fit) -> str:
        if fit.reason == NO_ANSWER:
            return "the conversation has no assistant turn to learn from"
        where = "an input image" if fit.reason == IMAGE_CUT else "the first answer"
        return (
            f"the conversation has {fit.length} tokens; max_length {self.max_length} "
            f"cuts into {where} ({fit.reason})"
        )

    def _fit(self, input_ids: list[int], labels: list[int], ends: list[int]) -> Fit:
        length = len(input_ids)
        if not ends:
            return Fit(length, 0, 0, reason=NO_ANSWER)
        limit = self.max_length
        if limit is None or length <= limit:
            return Fit(length, length, _count_labels(labels))
        fitting = [end for end in ends if end <= limit]
        if not fitting:
            image_cut = IMAGE_TOKEN_ID in input_ids[limit : ends[0]]
            return Fit(length, 0, 0, reason=IMAGE_CUT if image_cut else ANSWER_CUT)
        kept = fitting[-1]
        return Fit(length, kept, _count_labels(labels[:kept]), len(ends) - len(fitting))

    def _encode(
        self, conversations: Sequence[Mapping[str, str]]
    ) -> tuple[list[int], list[int], list[int]]:
        """Untruncated ids and labels, and the position after each assistant turn."""
        input_ids = self._head()
        labels = [IGNORE_INDEX] * len(input_ids)
        ends: list[int] = []
        for turn in conversations:
            role = ROLES.get(turn["from"])
            if role is None:
                raise ValueError(f"unknown speaker {turn['from']!r}")
            header = self._fixed(self.style.user if role == "user" else self.style.assistant)
            body = self._message(turn["value"]) + self._fixed(self.style.sep)
            input_ids += header + body
            labels += [IGNORE_INDEX] * len(header)
            if role == "assistant":
                if IMAGE_TOKEN_ID in body:
                    raise ValueError("an <image> placeholder in an assistant turn")
                labels += body
                ends.append(len(input_ids))
            else:
                labels += [IGNORE_INDEX] * len(body)
        return input_ids, labels, ends

    def prompt(self, question: str, answer_prefix: str = "") -> torch.Tensor:
        """Input ids for generation: the user turn, then the open assistant header (+ prefix)."""
        ids = self._head() + self._fixed(self.style.user) + self._message(question)
        ids += self._fixed(self.style.sep) + self._fixed(self.style.assistant)
        if answer_prefix:
            ids += self.tokenizer.encode(answer_prefix)
        return torch.tensor(ids, dtype=torch.long)

    def official_prompt(self, question: str, answer_prefix: str = "") -> torch.Tensor:
        """The inference prompt tokenized as the official scripts do (llava/mm_utils.py
        ``tokenizer_image_token``): the whole prompt string (``conv.get_prompt()`` plus the
        prefix) is split at ``<image>``, each chunk tokenized on its own with BOS, the BOS of
        later chunks dropped, and one ``IMAGE_TOKEN_ID`` (-200) between chunks, which the
        model expands to ``num_image_tokens`` patch positions here."""
        style = self.style
        text = style.system + style.sep + style.user + question + style.sep + style.assistant
        bos = self.tokenizer.bos_token_id
        head = [] if bos is None else [bos]
        parts = (text + answer_prefix).split(IMAGE_PLACEHOLDER)
        chunks = [head + self.tokenizer.encode(part) for part in parts]
        # The official drops the first id of every later chunk when the first chunk starts
        # with the tokenizer's declared BOS id, even one it does not prepend (text may hold it).
        declared = getattr(self.tokenizer, "declared_bos_token_id", bos)
        offset = int(bool(chunks[0]) and chunks[0][0] == declared)
        ids = chunks[0][:offset]
        for i, chunk in enumerate(chunks):
            if i:
                ids.extend([IMAGE_TOKEN_ID] * self.num_image_tokens)
            ids.extend(chunk[offset:])
        return torch.tensor(ids, dtype=torch.long)


def _count_labels(labels: list[int]) -> int:
    """Answer labels the loss sees (the first position is never a target)."""
    return sum(label != IGNORE_INDEX for label in labels[1:])


def collate(
    samples: Sequence[Mapping[str, object]], pad_token_id: int, image_size: int | None = None
) -> dict[str, object]:
    """Right-pad samples into the batch :meth:`HealthGPT.forward` takes.

    Each sample has ``input_ids``, ``labels``, ``task_family`` and optionally ``pixel_values``
    ([3, S, S]); samples without an image get zeros (their ids hold no image positions).
    """
    length = max(len(s["input_ids"]) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[i, :n], labels[i, :n], attention_mask[i, :n] = s["input_ids"], s["labels"], 1
    out: dict[str, object] = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "task_family": [s["task_family"] for s in samples],
    }
    pixels = [s.get("pixel_values") for s in samples]
    if any(p is not None for p in pixels):
        ref = next(p for p in pixels if p is not None)
        if image_size is not None and ref.shape[-1] != image_size:
            raise ValueError(
                f"pixel_values are {ref.shape[-1]}px, the vision tower wants {image_size}"
            )
        out["pixel_values"] = torch.stack(
            [p if p is not None else torch.zeros_like(ref) for p in pixels]
        )
    return out
