"""A tiny model trained by the real stage 3 (one step, comprehension only, so no VQ tokenizer
has to be trained first), once per session, on the training's synthetic mixture with the
manifest a mixture build writes beside it, so the model card has a composition."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from healthgpt.data.shards import ShardInfo, open_shard, write_manifest
from healthgpt.storage import file_sha256
from healthgpt.train.run import RunSpec, run_stage
from healthgpt.train.synthetic import write_synthetic_mixture

QUICK = {
    "families": {"generation": None},
    "max_steps": 1,
    "eval_samples": 1,
    "max_new_tokens": 1,
    "num_workers": 0,
    "checkpoint_every": 1000,
}
COMPOSITION = {"task": {"reconstruction": 16, "vqa_closed": 16}, "source": {"synthetic": 32}}


@pytest.fixture(scope="session")
def mixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic_mixture(tmp_path_factory.mktemp("mixture"), train=8, test=2)
    shards = [
        ShardInfo(p.relative_to(root).as_posix(), open_shard(p).metadata.num_rows,
                  p.stat().st_size, file_sha256(p))
        for p in sorted(root.rglob("*.parquet"))
    ]  # fmt: skip
    counts = {subset: COMPOSITION for subset in ("stage1", "stage2", "stage3")}
    write_manifest(root, shards, summary={"counts": counts}, config={})
    return root


@pytest.fixture(scope="session")
def trained_data(mixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose `checkpoints/stage3` holds a finished stage 3 run."""
    data = tmp_path_factory.mktemp("data")
    run_stage(RunSpec("stage3", mixture_dir, data / "checkpoints" / "stage3", overrides=QUICK))
    return data


@pytest.fixture(scope="session")
def scan_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small grayscale PNG standing in for a scan slice."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("images") / "scan.png"
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path
