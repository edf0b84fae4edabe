"""Can data loading starve training? Loader throughput per worker beside training-step throughput.

Loader: Parquet shards -> decoded, CLIP-preprocessed, tokenized, padded micro-batches (the
exact `ShardStream` and `HealthGPT` formatter the stages use), in the main process (= one
worker's rate) and with 1 and 2 DataLoader workers. Training: optimizer steps of the CPU
preset's stage 3 (the `tiny` `HealthGPT`) on pre-built batches, so it measures compute alone.
The ratio "workers needed" = training samples/s / loader samples/s per worker says how many
workers keep the trainer fed; on a GPU the trainer is ~100x faster, so read the per-worker
number against the GPU's samples/s.

Timing follows `benchmarks.timing`: the loader variants (0, 1, 2 workers) run interleaved,
A B C A B C, each run a fresh loader timed from its first batch; at least 5 runs each and 5
timed training steps, medians with their spread, and the machine load in the printed JSON.

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
from benchmarks.timing import (
    MIN_REPEATS,
    interleave,
    machine_load,
    print_result,
    steady_allocator,
    summary,
)
from healthgpt.train.config import stage_config
from healthgpt.train.data import RowIndex, ShardStream, StreamSpec, make_loader, split_files
from healthgpt.train.model_api import build_bundle
from healthgpt.train.stages import build_optimizer, freeze_for_stage
from healthgpt.train.synthetic import write_synthetic_mixture

WORKERS = (0, 1, 2)


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


def loader_rates(
    mixture: Path, bundle, micro_batch: int, batches: int, repeats: int
) -> dict[int, list[float]]:
    """Samples/s of each worker count, one run per round, the counts interleaved."""
    rates: dict[int, list[float]] = {w: [] for w in WORKERS}
    interleave(
        {
            f"workers={w}": (
                lambda w=w: rates[w].append(loader_rate(mixture, bundle, micro_batch, w, batches))
            )
            for w in WORKERS
        },
        repeats=repeats,
        what="loader runs",
    )
    return rates


def train_rate(mixture: Path, micro_batch: int, steps: int) -> tuple[list[float], list[int]]:
    """Seconds and tokens of each timed stage-3 comprehension step of the CPU preset."""
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
    tokens: list[int] = []

    def one_step() -> None:
        batch = batches[len(tokens) % len(batches)]
        bundle.loss(bundle.model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens.append(int(batch["attention_mask"].sum()))

    times = interleave({"step": one_step}, repeats=steps, warmup=2, what="training steps")
    return times["step"], tokens[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--image-size", type=int, default=256, help="stored PNG size")
    args = parser.parse_args()
    load_before = machine_load()
    steady_allocator()
    micro_batch, batches = 8, (4 if args.quick else 20)
    repeats = 2 if args.quick else MIN_REPEATS
    steps = 3 if args.quick else 3 * MIN_REPEATS
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_synthetic_mixture(
            Path(tmp), train=512, test=8, subsets=("stage3",), image_size=args.image_size
        )
        bundle = build_bundle("tiny", 512, 0.05, 0, None)
        loader = loader_rates(mixture, bundle, micro_batch, batches, repeats)
        step_seconds, step_tokens = train_rate(mixture, micro_batch, steps)
    medians = {w: summary(rates) for w, rates in loader.items()}
    per_worker = medians[0]["median"]
    step = summary(step_seconds)
    train_samples = micro_batch / step["median"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "stored_image_size": args.image_size,
        "micro_batch": micro_batch,
        "loader_samples_per_s": {f"workers={w}": round(m["median"], 1) for w, m in medians.items()},
        "loader_spread": {f"workers={w}": round(m["spread"], 3) for w, m in medians.items()},
        "loader_runs_per_variant": repeats,
        "loader_samples_per_s_per_worker": round(per_worker, 1),
        "train_samples_per_s": round(train_samples, 1),
        "train_tokens_per_s": round(sum(step_tokens) / sum(step_seconds), 0),
        "train_step_spread": round(step["spread"], 3),
        "train_steps_timed": step["n"],
        "workers_needed_to_feed_training": round(train_samples / per_worker, 2),
    }
    print("| measure | samples/s (median) | spread |\n|---|---|---|")
    for w, m in medians.items():
        print(
            f"| loader, workers={w} (0 = in the main process) | {m['median']:.1f} | "
            f"{m['spread']:.1%} |"
        )
    print(
        f"| training step, CPU preset stage 3 (micro-batch {micro_batch}) | "
        f"{train_samples:.1f} | {step['spread']:.1%} |"
    )
    print(
        f"\nOne loader worker delivers {per_worker:.0f} samples/s ({args.image_size}px PNGs); "
        f"training consumes {train_samples:.0f} samples/s here, so "
        f"{result['workers_needed_to_feed_training']} workers keep it fed. A GPU trainer "
        "consuming S samples/s needs about S / per-worker-rate workers."
    )
    result["load_before"], result["load_after"] = load_before, machine_load()
    write_result("train", result)
    print_result("train", result, load_before)


if __name__ == "__main__":
    main()
