import numpy as np
import pytest
from PIL import Image

from healthgpt.eval.predict import (
    HealthGPTImage,
    HealthGPTText,
    TextItem,
    TextModel,
    batched,
    generate_replies,
    render_prompt,
)
from tests.eval.fakes import FakeTextModel, gray, png


def test_prompt_templates():
    vqa = TextItem(id="1", benchmark="b", question=" Is it? ", answer="yes", answer_type="closed")
    assert render_prompt(vqa) == "Is it?"
    mcq = TextItem(
        id="2",
        benchmark="b",
        question="Which?",
        answer="B",
        answer_type="choice",
        options=("CT", "MRI"),
    )
    assert render_prompt(mcq) == (
        "Which?\nA. CT\nB. MRI\nAnswer with the option's letter from the given choices directly."
    )


def test_batched_keeps_order_and_remainder():
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(batched([1], 0))


def test_generate_replies_decodes_images_and_checks_reply_count():
    items = [
        TextItem(
            id=str(i),
            benchmark="b",
            question=f"q{i}",
            answer="",
            answer_type="open",
            images=(png(gray(i)),),
        )
        for i in range(3)
    ]
    model = FakeTextModel({"q1": "one"}, default="other")
    assert isinstance(model, TextModel)
    replies = [reply for _, _, reply in generate_replies(model, items, batch_size=2)]
    assert replies == ["other", "one", "other"] and model.batches == [2, 1]

    class Short:
        def generate_text(self, images, prompts):
            return ["only one"]

    with pytest.raises(RuntimeError, match="1 replies for 2 prompts"):
        list(generate_replies(Short(), items[:2], batch_size=2))


class PerExample:
    """Stand-in for HealthGPT's per-example API, recording what it was called with."""

    def __init__(self):
        self.calls = []

    def generate_text(self, image, question, max_new_tokens=16):
        self.calls.append((image.size, question, max_new_tokens))
        return f"answer to {question}"

    def generate_image(self, image, instruction):
        return np.asarray(image.convert("L"))


def test_healthgpt_adapters_pass_greedy_arguments_it_accepts():
    model = PerExample()
    text = HealthGPTText(model, max_new_tokens=7)
    image = Image.new("RGB", (8, 8))
    assert text.generate_text([image], ["q"]) == ["answer to q"]
    assert model.calls == [((8, 8), "q", 7)]  # do_sample is not passed: not accepted
    out = HealthGPTImage(model).generate_image([image], ["convert"])
    assert isinstance(out[0], Image.Image) and out[0].size == (8, 8)


def test_healthgpt_text_prefers_a_batched_method():
    class Batched(PerExample):
        def generate_text_batch(self, images, questions, **kwargs):
            assert kwargs == {"max_new_tokens": 5, "do_sample": False}
            return [q.upper() for q in questions]

    assert HealthGPTText(Batched(), 5).generate_text([None, None], ["a", "b"]) == ["A", "B"]


def test_healthgpt_image_prefers_a_batched_method():
    class Batched(PerExample):
        def generate_image_batch(self, images, instructions):
            return [Image.new("RGB", (len(text), 1)) for text in instructions]

    out = HealthGPTImage(Batched()).generate_image([None, None], ["a", "bcd"])
    assert [image.size for image in out] == [(1, 1), (3, 1)]
