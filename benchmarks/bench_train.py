"""Can data loading starve training? Loader throughput per worker beside training-step throughput.

Loader: Parquet shards -> decoded, CLIP-preprocessed, tokenized, padded micro-batches (the
exact `ShardStream` and `HealthGPT` formatter the stages use), in the main process (= one
worker's rate) and with 1 and 2 DataLoader workers. Training: optimizer steps of the CPU
preset's stage 3 (the `tiny` `HealthGPT`) on pre-built batches, so it measures compute alone.
The ratio "workers needed" = training samples/s / loader samples/s per worker says how many
workers keep the trainer fed; on a GPU the trainer is ~100x faster, so read the per-worker
number against the GPU's samples/s.

    python -m benchmarks.bench_train            # markdown + benchmarks/results/train.json
    python -m benchmarks.bench_train --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from benchmarks import write_result
from healthgpt.train.config import stage_config
from healthgpt.train.data import RowIndex, ShardStream, StreamSpec, make_loader, split_files
from healthgpt.train.model_api import build_bundle
from healthgpt.train.stages import build_optimizer, freeze_for_stage
from healthgpt.train.synthetic import write_synthetic_mixture


def loader_rate(mixture: Path, bundle, micro_batch: int, workers: int, batches: int) -> float:
    """Samples per second delivered by a DataLoader over the comprehension stream."""
    index = RowIndex.build(split_files(mixture / "stage3", "train"), "comprehension")
    stream = ShardStream(
        index, StreamSpec(micro_batch), bundle.encoder(), bundle.collator(), columns=bundle.columns
    )
    loader = iter(make_loader(stream, workers))
    next(loader)  # worker start-up is not throughput
    start = time.perf_counter()
    n = sum(len(b["tasks"]) for b in islice(loader, batches))
    return n / (time.perf_counter() - start)


def train_rate(mixture: Path, micro_batch: int, steps: int) -> tuple[float, float]:
    """(samples/s, tokens/s) of stage-3 comprehension steps of the CPU preset."""
    config = stage_config("stage3", {"micro_batch": micro_batch})
    config.families["comprehension"].global_batch = micro_batch
    bundle = build_bundle("tiny", config.max_length, config.dropout, 0, None)
    trainable = freeze_for_stage(bundle.model, bundle.parameter_groups(), config)
    optimizer = build_optimizer(trainable, config)
    index = RowIndex.build(split_files(mixture / "stage3", "train"), "comprehension")
    stream = ShardStream(
        index, StreamSpec(micro_batch), bundle.encoder(), bundle.collator(), columns=bundle.columns
    )
    batches = [bundle.prepare(b, torch.device("cpu")) for b in islice(iter(stream), 4)]
    tokens = 0
    for step in range(steps + 2):
        if step == 2:
            start, tokens = time.perf_counter(), 0
        batch = batches[step % len(batches)]
        bundle.loss(bundle.model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - start
    return steps * micro_batch / seconds, tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--image-size", type=int, default=256, help="stored PNG size")
    args = parser.parse_args()
    micro_batch, batches, steps = 8, (10 if args.quick else 40), (5 if args.quick else 30)
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_synthetic_mixture(
            Path(tmp), train=512, test=8, subsets=("stage3",), image_size=args.image_size
        )
        bundle = build_bundle("tiny", 512, 0.05, 0, None)
        loader = {w: loader_rate(mixture, bundle, micro_batch, w, batches) for w in (0, 1, 2)}
        train_samples, train_tokens = train_rate(mixture, micro_batch, steps)
    per_worker = loader[0]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "stored_image_size": args.image_size,
        "micro_batch": micro_batch,
        "loader_samples_per_s": {f"workers={w}": round(v, 1) for w, v in loader.items()},
        "loader_samples_per_s_per_worker": round(per_worker, 1),
        "train_samples_per_s": round(train_samples, 1),
        "train_tokens_per_s": round(train_tokens, 0),
        "workers_needed_to_feed_training": round(train_samples / per_worker, 2),
    }
    print("| measure | samples/s |\n|---|---|")
    for name, value in result["loader_samples_per_s"].items():
        print(f"| loader, {name} (0 = in the main process) | {value} |")
    print(
        f"| training step, CPU preset stage 3 (micro-batch {micro_batch}) | {train_samples:.1f} |"
    )
    print(
        f"\nOne loader worker delivers {per_worker:.0f} samples/s ({args.image_size}px PNGs); "
        f"training consumes {train_samples:.0f} samples/s here, so "
        f"{result['workers_needed_to_feed_training']} workers keep it fed. A GPU trainer "
        "consuming S samples/s needs about S / per-worker-rate workers."
    )
    write_result("train", result)


if __name__ == "__main__":
    main()
