"""Conversation formatting, tokenizers and batch collation."""

from __future__ import annotations

import pytest
import torch

from healthgpt.model.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from healthgpt.model.prompt import (
    ANSWER_CUT,
    IMAGE_CUT,
    NO_ANSWER,
    PHI3,
    ConversationFormatter,
    SampleDropped,
    collate,
)
from healthgpt.model.tokenizer import ByteTokenizer, TextTokenizer


@pytest.fixture
def formatter() -> ConversationFormatter:
    return ConversationFormatter(ByteTokenizer(PHI3.special_tokens), PHI3, num_image_tokens=4)


def _text(formatter, ids) -> str:
    return formatter.tokenizer.decode([i for i in ids if i >= 0])


def test_labels_cover_exactly_the_assistant_turns(formatter):
    conv = [
        {"from": "human", "value": "<image>\nWhat is shown?"},
        {"from": "gpt", "value": "A chest X-ray."},
        {"from": "human", "value": "Any fracture?"},
        {"from": "gpt", "value": "No."},
    ]
    sample = formatter(conv)
    ids, labels = sample["input_ids"], sample["labels"]
    assert ids.shape == labels.shape
    learned = labels[labels != IGNORE_INDEX].tolist()
    assert _text(formatter, learned) == "A chest X-ray.<|end|>No.<|end|>"
    # Where a label is set it equals the input token at that position.
    mask = labels != IGNORE_INDEX
    assert torch.equal(labels[mask], ids[mask])
    assert (ids == IMAGE_TOKEN_ID).sum() == 4
    assert (labels[ids == IMAGE_TOKEN_ID] == IGNORE_INDEX).all()
    assert _text(formatter, ids).startswith("<s><|system|>\nYou are a helpful AI assistant.<|end|>")


def test_inference_prompt_is_the_training_prefix(formatter):
    conv = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Normal."}]
    train_ids = formatter(conv)["input_ids"].tolist()
    prompt = formatter.prompt("<image>\nDescribe.").tolist()
    assert train_ids[: len(prompt)] == prompt
    assert _text(formatter, train_ids[len(prompt) :]) == "Normal.<|end|>"


@pytest.mark.parametrize(
    ("conv", "error"),
    [
        ([{"from": "robot", "value": "hi"}], "unknown speaker"),
        ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}], "assistant turn"),
    ],
)
def test_bad_conversations_are_rejected(formatter, conv, error):
    with pytest.raises(ValueError, match=error):
        formatter(conv)


def _fitting(max_length: int | None) -> ConversationFormatter:
    return ConversationFormatter(ByteTokenizer(PHI3.special_tokens), PHI3, 4, max_length)


def test_a_cut_answer_drops_the_sample_with_its_reason():
    long = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "x" * 200}]
    full = len(_fitting(None)(long)["input_ids"])
    f = _fitting(60)
    fit = f.fit(long)
    assert (fit.length, fit.kept, fit.labels, fit.reason) == (full, 0, 0, ANSWER_CUT)
    with pytest.raises(SampleDropped, match="answer_cut") as error:
        f(long)
    assert error.value.reason == ANSWER_CUT


def test_a_cut_image_drops_the_sample():
    late_image = [{"from": "human", "value": "y" * 100 + "<image>"}, {"from": "gpt", "value": "a"}]
    with pytest.raises(SampleDropped) as error:
        _fitting(60)(late_image)
    assert error.value.reason == IMAGE_CUT


def test_a_cut_closed_answer_is_dropped_not_kept_without_labels():
    """The audit's case: a max_length that ends right after the prompt used to keep the sample
    with 0 labels (loss 0, still counted in the accumulation divisor)."""
    conv = [
        {"from": "human", "value": "<image>\nIs there a fracture?"},
        {"from": "gpt", "value": "No"},
    ]
    prompt = len(_fitting(None).prompt("<image>\nIs there a fracture?"))
    fit = _fitting(prompt + 1).fit(conv)
    assert fit.dropped and fit.reason == ANSWER_CUT and fit.labels == 0


def test_no_answer_is_a_counted_drop():
    fit = _fitting(None).fit([{"from": "human", "value": "hi"}])
    assert fit.reason == NO_ANSWER
    with pytest.raises(SampleDropped, match="no assistant turn"):
        _fitting(None)([{"from": "human", "value": "hi"}])


def test_multi_turn_is_cut_at_a_turn_boundary_keeping_whole_answers():
    conv = [
        {"from": "human", "value": "<image>\nWhat is shown?"},
        {"from": "gpt", "value": "A chest X-ray."},
        {"from": "human", "value": "Any fracture?"},
        {"from": "gpt", "value": "No." + " really" * 30},
    ]
    whole = _fitting(None)(conv)
    first_turn = _fitting(None)(conv[:2])
    n = len(first_turn["input_ids"])
    assert len(whole["input_ids"]) > n + 10
    for limit in (n, n + 10, len(whole["input_ids"]) - 1):
        f = _fitting(limit)
        sample, fit = f(conv), f.fit(conv)
        assert torch.equal(sample["input_ids"], first_turn["input_ids"])
        assert torch.equal(sample["labels"], first_turn["labels"])
        assert (fit.kept, fit.turns_dropped, fit.reason) == (n, 1, None)
        assert fit.labels == int((first_turn["labels"][1:] != IGNORE_INDEX).sum())
    assert _fitting(len(whole["input_ids"])).fit(conv).turns_dropped == 0
    assert _fitting(n - 1).fit(conv).reason == ANSWER_CUT


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer(["<|end|>"])
    assert isinstance(tok, TextTokenizer)
    text = "Lésion <|end|> <not-special> é"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode("<|end|>") == [tok.token_to_id("<|end|>")]
    assert tok.decode(ids, skip_special_tokens=True) == "Lésion  <not-special> é"
    assert tok.add_special_tokens(["<a>", "<|end|>"]) == 1
    with pytest.raises(ValueError):
        tok.add_special_tokens(["no brackets"])


def test_collate_pads_right_and_keeps_families(formatter):
    a = formatter([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}])
    b = formatter(
        [{"from": "human", "value": "question"}, {"from": "gpt", "value": "longer answer"}]
    )
    batch = collate(
        [
            a | {"task_family": "comprehension", "pixel_values": torch.ones(3, 8, 8)},
            b | {"task_family": "generation"},
        ],
        pad_token_id=0,
    )
    n_a, n_b = len(a["input_ids"]), len(b["input_ids"])
    assert batch["input_ids"].shape == (2, max(n_a, n_b))
    assert batch["attention_mask"].sum(1).tolist() == [n_a, n_b]
    assert batch["task_family"] == ["comprehension", "generation"]
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"][1].abs().sum() == 0
    short = 0 if n_a < n_b else 1
    assert (batch["labels"][short, min(n_a, n_b) :] == IGNORE_INDEX).all()
