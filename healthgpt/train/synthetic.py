"""Synthetic mixture shards whose answers are decided by the image, for tests and benchmarks.

A CT-like image (a bright disc on black) answers "CT", an X-ray-like one (a vertical
gradient with rib-like bands) answers "X-Ray"; the question text is the same for both, so a
model can only beat chance (0.5) by looking at the image. Generation samples reconstruct
their input image. Written with the mixture's own `SAMPLE_SCHEMA` and `ShardWriter` in the
mixture layout `<dir>/<subset>/data/{train,test}-NNNNN.parquet`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from healthgpt.data.schema import SAMPLE_SCHEMA, image_value, stable_id
from healthgpt.data.shards import ShardWriter
from healthgpt.data.tasks import STAGES, TARGET_IMAGE_TOKEN, with_image

QUESTION = "What modality is this image?"
MODALITIES = ("CT", "X-Ray")


def synthetic_image(kind: str, rng: np.random.Generator, size: int = 64) -> bytes:
    """A grayscale PNG of a CT-like disc or an X-ray-like banded gradient, with noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "CT":
        cx, cy, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.4)
        array = np.where((x - cx) ** 2 + (y - cy) ** 2 < r**2, rng.uniform(0.6, 0.9), 0.05)
    else:
        bands = 0.5 + 0.5 * np.sin(2 * np.pi * y * rng.uniform(5, 8))
        array = 0.25 + 0.5 * x * bands
    array = np.clip(array + rng.normal(0, 0.05, array.shape), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((array * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def synthetic_row(
    index: int, split: str, family: str, rng: np.random.Generator, size: int = 64
) -> dict[str, Any]:
    modality = MODALITIES[index % 2]
    png = synthetic_image(modality, rng, size)
    base = {
        "id": stable_id("synthetic", split, family, index),
        "record_id": stable_id("synthetic-record", split, index),
        "source": "synthetic",
        "split": split,
        "modality": modality,
        "target_modality": None,
        "body_part": None,
        "subject_id": f"s{index}",
        "image": image_value(png),
        "meta": None,
    }
    if family == "comprehension":
        return {
            **base,
            "task": "vqa_closed",
            "task_family": "comprehension",
            "direction": "image->text",
            "target_image": None,
            "conversations": [
                {"from": "human", "value": with_image(QUESTION)},
                {"from": "gpt", "value": modality},
            ],
            "answer_type": "closed",
        }
    return {
        **base,
        "task": "reconstruction",
        "task_family": "generation",
        "direction": f"{modality}->{modality}",
        "target_modality": modality,
        "target_image": image_value(png),
        "conversations": [
            {"from": "human", "value": with_image("Reconstruct this image.")},
            {"from": "gpt", "value": TARGET_IMAGE_TOKEN},
        ],
        "answer_type": None,
    }


def write_synthetic_mixture(
    root: Path,
    train: int = 64,
    test: int = 32,
    subsets: tuple[str, ...] = STAGES,
    families: tuple[str, ...] = ("comprehension", "generation"),
    seed: int = 0,
    row_group_bytes: int = 64 << 10,
    image_size: int = 64,
) -> Path:
    """Write `train` and `test` rows per family into each subset; return `root`."""
    for subset in subsets:
        for split, count in (("train", train), ("test", test)):
            rng = np.random.default_rng([seed, sum(subset.encode()), len(split)])
            directory = Path(root) / subset / "data"
            with ShardWriter(
                directory, SAMPLE_SCHEMA, prefix=split, row_group_bytes=row_group_bytes
            ) as writer:
                for index in range(count):
                    for family in families:
                        writer.write(synthetic_row(index, split, family, rng, image_size))
    return Path(root)
