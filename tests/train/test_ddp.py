"""Two CPU processes under torchrun (gloo): DDP trains, ranks split the data, rank 0 reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from healthgpt.train.data import RowIndex, ShardStream, StreamSpec, split_files


def test_torchrun_two_processes(tmp_path, mixture_dir, vq_dir):
    overrides = {"max_steps": 4, "micro_batch": 4, "eval_samples": 2, "max_new_tokens": 1}
    overrides["num_workers"] = 0
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "healthgpt.train.entry",
        "--stage",
        "stage2",
        "--mixture",
        str(mixture_dir),
        "--out",
        str(tmp_path / "stage2"),
        "--vq",
        str(vq_dir),
        "--overrides",
        json.dumps(overrides),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    finals = [line for line in done.stdout.splitlines() if line.startswith("FINAL ")]
    assert len(finals) == 1, "exactly one rank (0) reports"
    metrics = json.loads(finals[0][6:])
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    assert metrics["samples"] == 4 * 8  # global batch 8 per step, over both ranks


def test_ranks_and_workers_partition_the_stream(mixture_dir):
    index = RowIndex.build(split_files(mixture_dir / "stage1", "train"), "comprehension")

    def rows(rank: int, world: int, start: int = 0, n: int = 3) -> list[list[int]]:
        stream = ShardStream(index, StreamSpec(4, 0, rank, world), lambda r: r, lambda b: b)
        return [stream.micro_batch_rows(j).tolist() for j in range(start, start + n)]

    r0, r1 = rows(0, 2), rows(1, 2)
    flat = [x for batch in r0 + r1 for x in batch]
    assert len(flat) == len(set(flat)) == 24, "ranks overlap or drop rows within an epoch"
    assert rows(0, 2, start=1, n=2) == r0[1:], "resuming at micro-batch 1 skips exactly one"
    stream = ShardStream(index, StreamSpec(4, 0, 0, 1), lambda r: r["task"], lambda b: b)
    assert next(iter(stream)) == ["vqa_closed"] * 4
