"""Shared fixtures: a toy source registered next to the real ones."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from healthgpt.data import sources
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader


def png_bytes(seed: int, size: int = 32) -> bytes:
    """A small deterministic grayscale PNG, distinct per seed."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class ToyReader(SourceReader):
    """Items 0..n-1 from `options.extra`; items listed in `bad` fail with a reason."""

    name = "toy"
    expected_layout = "toy/  (any directory)"

    def items(self) -> Iterator[Outcome]:
        n = self.options.extra.get("n", 10)
        bad = set(self.options.extra.get("bad", ()))
        for index in range(n):

            def build(index: int = index) -> list[dict]:
                if index in bad:
                    raise BadInput(f"item {index} is planted bad")
                return [
                    new_record(
                        source="toy",
                        orig_id=str(index),
                        split="test" if index % 5 == 0 else "train",
                        kind="vqa",
                        modality="CT",
                        image=png_bytes(index),
                        question=f"What is item {index}?",
                        answer=str(index),
                        answer_type="open",
                    )
                ]

            yield self.guard(str(index), f"item-{index}.png", build)


@pytest.fixture(autouse=True, scope="session")
def private_salt_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Sources that are not bundled samples get the installation's private salt: keep the
    file the tests create out of the working tree's data directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HEALTHGPT_DEID_SALT", raising=False)
        path = tmp_path_factory.mktemp("secrets") / "deid_salt"
        patch.setenv("HEALTHGPT_DEID_SALT_FILE", str(path))
        yield


@pytest.fixture
def toy_source(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(sources.SOURCES, "toy", "tests.conftest:ToyReader")
    return "toy"
