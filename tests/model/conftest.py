"""Fixtures for the model tests: the tiny preset, a small image, single-threaded torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from healthgpt.model import load_model


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: one thread is as fast, and immune to a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model():
    return load_model("tiny", device="cpu")


@pytest.fixture
def image() -> Image.Image:
    """A non-square RGB image (exercises the pad-to-square path)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), "RGB")
