"""Two CPU processes under torchrun (gloo): DDP trains, ranks split the data, rank 0 reports,
and the result is the one process's result: the same samples per step, the same dropout
masks per micro-batch (seeded per global micro-batch, so the ranks' masks differ), the same
loss normalization, with dropout on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from healthgpt.train.data import RowIndex, ShardStream, StreamSpec, split_files
from healthgpt.train.loop import dropout_seed
from healthgpt.train.run import RunSpec, current_final, run_stage

OVERRIDES = {
    "max_steps": 4,
    "micro_batch": 4,
    "families": {"comprehension": {"global_batch": 8}, "generation": {"global_batch": 8}},
    "dropout": 0.3,
    "eval_samples": 2,
    "max_new_tokens": 1,
    "num_workers": 0,
    "log_every": 1,
}


def torchrun(nproc: int, *args: str) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`) of N processes of the stage entry."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "healthgpt.train.entry",
        *args,
    ]


def stage_args(stage, mixture_dir, out, vq_dir, overrides, init=None) -> list[str]:
    args = ["--stage", stage, "--mixture", str(mixture_dir), "--out", str(out)]
    args += ["--vq", str(vq_dir), "--overrides", json.dumps(overrides)]
    return args + (["--init", str(init)] if init else [])


def final_metrics(stdout: str) -> dict:
    finals = [line for line in stdout.splitlines() if line.startswith("FINAL ")]
    assert len(finals) == 1, "exactly one rank (0) reports"
    return json.loads(finals[0][6:])


def test_two_processes_equal_one_with_dropout(tmp_path, mixture_dir, vq_dir):
    command = torchrun(2, *stage_args("stage3", mixture_dir, tmp_path / "two", vq_dir, OVERRIDES))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    two = final_metrics(done.stdout)
    assert two["world_size"] == 2 and two["steps"] == 4
    assert two["samples"] == 4 * 8  # global batch 8 per step, over both ranks

    one = run_stage(
        RunSpec("stage3", mixture_dir, tmp_path / "one", vq_dir=vq_dir, overrides=OVERRIDES)
    )
    assert one["world_size"] == 1
    assert (one["tokens"], one["answer_tokens"]) == (two["tokens"], two["answer_tokens"])
    histories = [
        json.loads((current_final(tmp_path / name) / "state.json").read_text())["progress"][
            "history"
        ]
        for name in ("one", "two")
    ]
    for a, b in zip(*histories, strict=True):
        assert (a["family"], a["answer_tokens"], a["tokens"]) == (
            b["family"],
            b["answer_tokens"],
            b["tokens"],
        )
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    weights = [load_file(current_final(tmp_path / n) / "model.safetensors") for n in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_seeds_differ_per_rank_and_micro_batch():
    seeds = {
        dropout_seed(0, family, b) for family in ("comprehension", "generation") for b in range(64)
    }
    assert len(seeds) == 128
    assert dropout_seed(0, "comprehension", 3) == dropout_seed(0, "comprehension", 3)


@pytest.fixture(scope="module")
def index30(mixture_dir):
    """30 rows: no micro-batch size or world size here divides it."""
    index = RowIndex.build(split_files(mixture_dir / "stage1", "train"), "comprehension")
    keep = np.ones(len(index), dtype=bool)
    keep[[3, 17]] = False
    return index.select(keep)


def _stream(index, world: int, micro: int, *, repeat: bool = True) -> list[list[int]]:
    """Every rank's micro-batches interleaved as global micro-batches b = j * world + rank."""
    streams = [
        ShardStream(
            index, StreamSpec(micro, 0, rank, world, repeat=repeat), lambda r: r, lambda b: b
        )
        for rank in range(world)
    ]
    per_rank = 90 // (micro * world) if repeat else max(s.per_rank for s in streams)
    out = []
    for j in range(per_rank):
        for stream in streams:
            if repeat or j < stream.per_rank:
                out.append(stream.micro_batch_rows(j).tolist())
    return out


@pytest.mark.parametrize(("world", "micro"), [(2, 4), (3, 2), (2, 3), (1, 8)])
def test_epoch_boundaries_do_not_depend_on_world_size(index30, world, micro):
    flat = [p for batch in _stream(index30, world, micro) for p in batch]
    reference = [p for batch in _stream(index30, 1, 1) for p in batch]
    assert flat == reference[: len(flat)], "the sample stream depends on the world size"
    for epoch in range(len(flat) // 30):
        assert sorted(flat[epoch * 30 : (epoch + 1) * 30]) == list(range(30)), epoch


@pytest.mark.parametrize(("world", "micro"), [(2, 4), (4, 4), (3, 7)])
def test_one_epoch_stream_shares_the_remainder(index30, world, micro):
    batches = _stream(index30, world, micro, repeat=False)
    flat = [p for batch in batches for p in batch]
    assert sorted(flat) == list(range(30)), "a row was dropped or repeated"
    assert all(len(b) == micro for b in batches[:-1]) and 0 < len(batches[-1]) <= micro


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


def test_the_stream_opens_each_shard_once_however_rows_are_shuffled(mixture_dir, monkeypatch):
    from healthgpt.train import data

    index = RowIndex.build(split_files(mixture_dir / "stage1", "train"), "comprehension")
    opened: list[str] = []
    real_open = data.open_shard
    monkeypatch.setattr(data, "open_shard", lambda path: opened.append(path) or real_open(path))
    spec = StreamSpec(4, 0, 0, 1, repeat=False)
    stream = ShardStream(index, spec, lambda r: r["id"], lambda b: b)
    stream.cache_row_groups = 1  # every row-group change is a cache miss
    ids = [row_id for batch in stream for row_id in batch]
    assert len(ids) == len(set(ids)) == len(index)
    assert sorted(opened) == sorted(set(opened)) and len(opened) <= len(index.files)
