"""Padding of stage-3 micro-batches: today's shuffle beside length-grouped batches.

Padding fraction = padded positions / all positions of right-padded micro-batches over one
epoch per family (families are separate streams, so a batch never mixes them). A family
whose plain shuffle pads at most `MIN_PADDING` keeps it. Two length mixes: the synthetic
mixture's stage 3 (lengths from the training formatter's own `fit`, as a stage screens
them), and a paper-like mix (comprehension 600-800 tokens; generation 600 image + 1,024 code
tokens plus a short prompt) with the m3 preset's micro-batch. Target: at most 10%.

    python -m benchmarks.bench_padding    # one JSON line + benchmarks/results/padding.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import write_result
from healthgpt.model import GENERATION
from healthgpt.train.config import stage_config
from healthgpt.train.data import (
    LENGTH_GROUP,
    RowIndex,
    ShardStream,
    StreamSpec,
    iter_rows,
    padding_fraction,
    split_files,
)
from healthgpt.train.lengths import screen
from healthgpt.train.model_api import TARGET_COLUMNS, build_bundle
from healthgpt.train.synthetic import write_synthetic_mixture

ROWS_PER_GROUP = 300  # about a 32 MB row group of the mixture's image rows


def epoch_padding(index: RowIndex, lengths: np.ndarray, micro: int, group: int) -> float:
    """Padding fraction of one epoch's micro-batches as `ShardStream` cuts them."""
    spec = StreamSpec(micro, seed=0, length_group=group)
    stream = ShardStream(index, spec, lambda r: r, lambda b: b, lengths=lengths)
    batches = -(-len(index) // micro)
    orders: dict = {}
    return padding_fraction(lengths, (stream.micro_batch_rows(j, orders) for j in range(batches)))


def synthetic_index(n: int) -> RowIndex:
    groups = (np.arange(n) // ROWS_PER_GROUP).astype(np.int32)
    return RowIndex(("f",), np.zeros(n, np.int32), groups, np.arange(n) % ROWS_PER_GROUP)


def paper_like(micro: int, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    mixes = {
        "comprehension": rng.integers(600, 801, 20_000),
        "generation": 600 + 1024 + rng.integers(10, 61, 10_000),
    }
    return {
        family: {
            "today": round(epoch_padding(synthetic_index(len(x)), x, micro, 0), 4),
            "grouped": round(epoch_padding(synthetic_index(len(x)), x, micro, LENGTH_GROUP), 4),
        }
        for family, x in mixes.items()
    }


def synthetic_mixture(micro: int) -> dict[str, dict[str, float]]:
    config = stage_config("stage3", {})
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_synthetic_mixture(Path(tmp), train=64, test=4, subsets=("stage3",))
        bundle = build_bundle("tiny", config.max_length, 0.0, 0, None)
        files = split_files(mixture / "stage3", "train")
        bundle.add_target_codes(iter_rows(files, TARGET_COLUMNS, GENERATION))
        out = {}
        for family in ("comprehension", "generation"):
            index = RowIndex.build(files, family)
            keep, _, lengths = screen(index, bundle.encoder().fit, config.max_length)
            index = index.select(keep)
            out[family] = {
                "today": round(epoch_padding(index, lengths, micro, 0), 4),
                "grouped": round(epoch_padding(index, lengths, micro, LENGTH_GROUP), 4),
            }
        return out


def main() -> None:
    paper_micro = stage_config("stage3", {"preset": "m3"}).micro_batch
    cpu_micro = stage_config("stage3", {}).micro_batch
    result = {
        "length_group": LENGTH_GROUP,
        "paper_like": {"micro_batch": paper_micro, **paper_like(paper_micro)},
        "synthetic_mixture_stage3": {"micro_batch": cpu_micro, **synthetic_mixture(cpu_micro)},
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    write_result("padding", result)


if __name__ == "__main__":
    main()
