"""Fixtures for the training tests: a tiny synthetic mixture and a trained VQ tokenizer,
built once per session (the VQ fit takes seconds, not per test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from healthgpt.train.synthetic import write_synthetic_mixture
from healthgpt.train.vq_assets import train_small_vq


@pytest.fixture(scope="session")
def mixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_mixture(tmp_path_factory.mktemp("mixture"), train=32, test=16)


@pytest.fixture(scope="session")
def vq_dir(mixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vq") / "vq_tokenizer"
    train_small_vq(mixture_dir, out, steps=10, batch=8)
    return out
