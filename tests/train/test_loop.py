"""The loop's bookkeeping: LR per family with warmup per family, answer and total tokens apart,
and the loss normalized over the answer tokens of the whole global batch (1 x 8 = 2 x 4 = 4 x 2).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from healthgpt.model import COMPREHENSION, GENERATION, IGNORE_INDEX
from healthgpt.model.healthgpt import HealthGPTOutput
from healthgpt.train import config as C
from healthgpt.train.config import stage_config
from healthgpt.train.distributed import Dist
from healthgpt.train.loop import Progress, accumulate, fit
from healthgpt.train.model_api import build_bundle
from healthgpt.train.schedule import family_order
from healthgpt.train.stages import build_optimizer, freeze_for_stage

ONE = Dist(rank=0, local_rank=0, world=1, device=torch.device("cpu"))


class _Toy(nn.Module):
    """One weight per parameter group of stage 1; the loss reads the batch's `x`."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.ParameterDict(
            {
                g: nn.Parameter(torch.ones(2))
                for g in (C.COMP_PROJECTOR, C.GEN_PROJECTOR, C.HLORA_GEN)
            }
        )

    def forward(self, batch):
        labels = batch["labels"]
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        loss_sum = sum(w.sum() for w in self.weights.values()) * n
        loss = loss_sum / batch.get("num_items_in_batch", n)
        return HealthGPTOutput(loss, {}, {}, float(loss_sum.detach()), n)


class _ToyBundle:
    def prepare(self, batch, device):
        return batch

    def forward(self, model, batch):
        return model(batch)


def _toy_batches(answer: int, length: int = 10):
    labels = torch.full((2, length), IGNORE_INDEX)
    labels[:, -answer:] = 1
    batch = {"labels": labels, "attention_mask": torch.ones(2, length, dtype=torch.long)}
    return itertools.repeat(batch)


def test_lr_per_family_warmup_per_family_and_token_counts():
    config = stage_config("stage1", {"warmup_ratio": 0.5, "checkpoint_every": 1000})
    order = family_order({COMPREHENSION: 4, GENERATION: 4})
    assert order[:2] == [COMPREHENSION, GENERATION]
    model = _Toy()
    groups = {g: {f"weights.{g}": p} for g, p in model.weights.items()}
    optimizer = build_optimizer(groups, config)
    progress = fit(
        config=config,
        bundle=_ToyBundle(),
        model=model,
        optimizer=optimizer,
        batches={COMPREHENSION: _toy_batches(3), GENERATION: _toy_batches(7)},
        order=order,
        accumulation={COMPREHENSION: 2, GENERATION: 1},
        progress=Progress(),
        d=ONE,
        log=lambda message: None,
        save=lambda progress: None,
    )
    history = progress.history
    lrs = config.trainable_groups()
    for family in (COMPREHENSION, GENERATION):
        entries = [h for h in history if h["family"] == family]
        assert [set(h["lr"]) for h in entries] == [set(config.families[family].trainable)] * 4
        factors = [h["lr"][g] / lrs[g] for h in entries for g in list(h["lr"])[:1]]
        # warmup = ceil(0.5 * 4) = 2 of the family's own steps: 1/3, 2/3, then cosine decay
        # over the other 2 (1, 1/2), for each family, wherever its steps fall in the order.
        assert factors == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5]), family
    comp = [h for h in history if h["family"] == COMPREHENSION][0]
    gen = [h for h in history if h["family"] == GENERATION][0]
    # 2 micro-batches x 2 rows x 10 positions; answer tokens are the labelled ones (shifted).
    assert (comp["tokens"], comp["answer_tokens"], comp["samples"]) == (40, 2 * 2 * 3, 4)
    assert (gen["tokens"], gen["answer_tokens"], gen["samples"]) == (20, 2 * 7, 2)
    assert progress.tokens == 4 * 40 + 4 * 20
    assert progress.answer_tokens == 4 * 12 + 4 * 14
    assert progress.consumed == {COMPREHENSION: 8, GENERATION: 4}


# --- the loss over a global batch does not depend on how it is split --------------------------

ANSWERS = ["No", "Yes", "A small left pleural effusion.", "CT", "X-Ray", "Normal chest."]


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def stage3():
    bundle = build_bundle("tiny", 512, 0.0, 0, None)  # no dropout: splits see the same masks
    config = stage_config("stage3")
    freeze_for_stage(bundle.model, bundle.parameter_groups(), config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in bundle.model.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return bundle


def _global_batch(bundle, image):
    model = bundle.model
    pixels = model.preprocess_image(image)
    samples = []
    for i in range(8):
        if i % 4 == 3:
            answer, family = model.image_to_answer(image), GENERATION
        else:
            answer, family = ANSWERS[i % len(ANSWERS)] * (1 + i % 3), COMPREHENSION
        turns = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": answer}]
        samples.append(
            model.format_conversation(turns) | {"task_family": family, "pixel_values": pixels}
        )
    return samples


def _gradient(bundle, samples, micro: int):
    model = bundle.model.train()
    model.zero_grad(set_to_none=True)
    batches = [model.collate(samples[i : i + micro]) for i in range(0, len(samples), micro)]
    stats = accumulate(model, bundle, batches, ONE)
    return stats, torch.cat([p.grad.flatten() for p in model.trainable_parameters()])


def test_global_batch_split_does_not_change_the_gradient(stage3, image):
    samples = _global_batch(stage3, image)
    stats, expected = _gradient(stage3, samples, 8)
    for micro in (4, 2):
        split_stats, got = _gradient(stage3, samples, micro)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        assert split_stats.loss == pytest.approx(stats.loss, rel=1e-5)
        assert split_stats.answer_tokens == stats.answer_tokens
    # The old objective, the mean of the micro-batches' means, differs for these answers.
    model = stage3.model
    model.zero_grad(set_to_none=True)
    for i in range(0, 8, 2):
        (model(model.collate(samples[i : i + 2])).loss / 4).backward()
    old = torch.cat([p.grad.flatten() for p in model.trainable_parameters()])
    assert not torch.allclose(old, expected, rtol=1e-3, atol=1e-6)
