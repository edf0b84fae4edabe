"""Padding of stage-3 micro-batches: today's shuffle beside length-grouped batches.

Padding fraction = padded positions / all positions of right-padded micro-batches over one
epoch per family (families are separate streams, so a batch never mixes them), cut as
`ShardStream` cuts them, from the lengths the stage screens with the training formatter's own
`fit`: the measure behind a stage's `padding_fraction` metadata. A family whose plain shuffle
pads at most `MIN_PADDING` keeps it. Three length mixes: the demo's stage 3 (the bundled
sample sources built, ingested and mixed with the demo preset in a temporary directory, as
`make demo` does, without Dagster), the synthetic mixture's stage 3, and a paper-like mix
(comprehension 600-800 tokens; generation 600 image + 1,024 code tokens plus a short prompt)
with the m3 preset's micro-batch. Target: at most 10%.

    python -m benchmarks.bench_padding    # one JSON line + benchmarks/results/padding.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import write_result
from healthgpt.data.ingest.run import ingest
from healthgpt.data.mixture.build import build_mixture
from healthgpt.data.mixture.config import demo_preset
from healthgpt.data.samples import build_sample_sources
from healthgpt.data.sources.registry import resolve
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


def epoch_batches(index: RowIndex, lengths: np.ndarray, micro: int, group: int) -> list:
    """One epoch's micro-batches (index positions) as `ShardStream` cuts them."""
    spec = StreamSpec(micro, seed=0, length_group=group)
    stream = ShardStream(index, spec, lambda r: r, lambda b: b, lengths=lengths)
    orders: dict = {}
    return [stream.micro_batch_rows(j, orders) for j in range(-(-len(index) // micro))]


def epoch_padding(index: RowIndex, lengths: np.ndarray, micro: int, group: int) -> float:
    """Padding fraction of one epoch's micro-batches as `ShardStream` cuts them."""
    return padding_fraction(lengths, epoch_batches(index, lengths, micro, group))


def families_padding(screened: dict[str, tuple[RowIndex, np.ndarray]], micro: int) -> dict:
    """Per family and over all of them (one epoch each), plain shuffle and length-grouped."""
    out: dict = {}
    for name, group in (("today", 0), ("grouped", LENGTH_GROUP)):
        total = np.zeros(0, np.int64)
        batches: list[np.ndarray] = []
        for family, (index, lengths) in screened.items():
            cut = epoch_batches(index, lengths, micro, group)
            out.setdefault(family, {})[name] = round(padding_fraction(lengths, cut), 4)
            batches += [b + len(total) for b in cut]
            total = np.concatenate([total, lengths])
        out.setdefault("all", {})[name] = round(padding_fraction(total, batches), 4)
    return out


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


def screened_stage3(mixture: Path, micro: int) -> dict:
    """Stage 3's families screened as the stage screens them (random VQ weights: a target's
    code text has the grid's length whatever the codes), then `families_padding`."""
    config = stage_config("stage3", {})
    bundle = build_bundle("tiny", config.max_length, 0.0, 0, None)
    files = split_files(mixture / "stage3", "train")
    bundle.add_target_codes(iter_rows(files, TARGET_COLUMNS, GENERATION))
    screened = {}
    for family in config.families:
        index = RowIndex.build(files, family)
        keep, _, lengths = screen(index, bundle.encoder().fit, config.max_length)
        screened[family] = (index.select(keep), lengths)
    rows = {family: len(index) for family, (index, _) in screened.items()}
    return {"rows": rows, **families_padding(screened, micro)}


def synthetic_mixture(micro: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_synthetic_mixture(Path(tmp), train=64, test=4, subsets=("stage3",))
        return screened_stage3(mixture, micro)


def demo_mixture(micro: int) -> dict:
    """The demo's mixture from the bundled sample sources: built, ingested (each with its
    registry options) and mixed with the demo preset, as `make demo` does."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ingested = {}
        for name, source in build_sample_sources(root / "sources").items():
            entry = resolve(name)
            ingested[name] = root / "ingested" / name
            ingest(name, source, ingested[name], entry.options, reader_name=entry.reader)
        build_mixture(ingested, root / "mixture", demo_preset())
        return screened_stage3(root / "mixture", micro)


def main() -> None:
    paper_micro = stage_config("stage3", {"preset": "m3"}).micro_batch
    cpu_micro = stage_config("stage3", {}).micro_batch
    result = {
        "length_group": LENGTH_GROUP,
        "paper_like": {"micro_batch": paper_micro, **paper_like(paper_micro)},
        "synthetic_mixture_stage3": {"micro_batch": cpu_micro, **synthetic_mixture(cpu_micro)},
        "demo_mixture_stage3": {"micro_batch": cpu_micro, **demo_mixture(cpu_micro)},
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    write_result("padding", result)


if __name__ == "__main__":
    main()
