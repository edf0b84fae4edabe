"""The vq_codes asset: each distinct target image encoded once; stage start encodes none.

On a small synthetic mixture (stages 1 and 3, every training target image used by two
samples): the asset's first run, a second run (nothing left to encode), then what a stage
start encodes for each subset with the codes present and without them (the fallback).
Counts, not timings, are the figures; the seconds are beside them.

    python -m benchmarks.bench_vq_codes   # one JSON line + benchmarks/results/vq_codes.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks import write_result
from healthgpt.data.schema import SAMPLE_SCHEMA
from healthgpt.data.shards import ShardWriter, open_shard
from healthgpt.model import GENERATION
from healthgpt.train import vq_codes
from healthgpt.train.data import iter_rows, split_files
from healthgpt.train.model_api import TARGET_COLUMNS, build_bundle
from healthgpt.train.synthetic import write_synthetic_mixture
from healthgpt.train.vq_assets import train_small_vq, vq_hash

SUBSETS = ("stage1", "stage3")


def duplicate_targets(subset_dir: Path) -> None:
    """Every training row twice under another id: the same images used by two samples."""
    for path in split_files(subset_dir, "train"):
        rows = open_shard(path).read().to_pylist()
        path.unlink()
        with ShardWriter(path.parent, SAMPLE_SCHEMA, prefix="train") as writer:
            for row in rows + [{**row, "id": f"copy-{row['id']}"} for row in rows]:
                writer.write(row)


def stage_start_encodes(mixture: Path, vq_dir: Path, subset: str) -> int:
    """Images a stage start runs through the VQ encoder (`run._target_codes`' two paths)."""
    bundle = build_bundle("tiny", 512, 0.0, 0, vq_dir)
    codes = vq_codes.load_codes(mixture, mixture / subset, vq_hash(vq_dir), bundle.vq_preprocess)
    if codes is not None:
        bundle.set_target_codes(codes)
        return bundle.images_encoded
    files = split_files(mixture / subset, "train")
    return bundle.add_target_codes(iter_rows(files, TARGET_COLUMNS, GENERATION))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_synthetic_mixture(Path(tmp) / "mixture", train=48, test=8, subsets=SUBSETS)
        for subset in SUBSETS:
            duplicate_targets(mixture / subset)
        vq_dir = Path(tmp) / "vq"
        train_small_vq(mixture, vq_dir, steps=5, batch=8)
        without = {s: stage_start_encodes(mixture, vq_dir, s) for s in SUBSETS}
        started = time.perf_counter()
        first = vq_codes.compute(mixture, vq_dir, SUBSETS, log=lambda m: None, vq_preprocess="pad")
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = vq_codes.compute(mixture, vq_dir, SUBSETS, log=lambda m: None, vq_preprocess="pad")
        second_s = time.perf_counter() - started
        with_codes = {s: stage_start_encodes(mixture, vq_dir, s) for s in SUBSETS}
    result = {
        "generation_samples": first.samples,
        "distinct_images": first.images,
        "asset_first_run_encoded": first.images_encoded,
        "asset_first_run_s": round(first_s, 2),
        "asset_second_run_encoded": second.images_encoded,
        "asset_second_run_s": round(second_s, 2),
        "stage_start_encoded_without_codes": without,
        "stage_start_encoded_with_codes": with_codes,
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    write_result("vq_codes", result)


if __name__ == "__main__":
    main()
