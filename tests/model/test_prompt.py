"""Conversation formatting, tokenizers and batch collation."""

from __future__ import annotations

import pytest
import torch

from healthgpt.model.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from healthgpt.model.prompt import PHI3, ConversationFormatter, collate
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
        ([{"from": "human", "value": "hi"}], "no assistant turn"),
        ([{"from": "robot", "value": "hi"}], "unknown speaker"),
        ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}], "assistant turn"),
    ],
)
def test_bad_conversations_are_rejected(formatter, conv, error):
    with pytest.raises(ValueError, match=error):
        formatter(conv)


def test_truncation_never_cuts_the_image():
    f = ConversationFormatter(ByteTokenizer(PHI3.special_tokens), PHI3, 4, max_length=60)
    long = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "x" * 200}]
    assert len(f(long)["input_ids"]) == 60
    late_image = [{"from": "human", "value": "y" * 100 + "<image>"}, {"from": "gpt", "value": "a"}]
    with pytest.raises(ValueError, match="image"):
        f(late_image)


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
