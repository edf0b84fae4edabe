"""The GPU configuration, rehearsed on CPU: what stands in for a GPU run until one is lent.

The tiny model through stages 1, 2 and 3 exactly as a GPU run is configured, only smaller:
two processes under torchrun (gloo instead of NCCL), a bf16 frozen base with fp32 master
weights under bf16 autocast (CPU autocast instead of CUDA's), gradient checkpointing, dropout,
gradient accumulation across ranks, a DataLoader worker, each stage's held-out evaluation
(losses and greedy answers, i.e. generation), stage 3 killed after its first checkpoint and
resumed, and the evaluation group's way of loading the result (bf16, as on a GPU) generating
text and an image. What only a GPU can show is listed in the README (GPU section).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from healthgpt.data.decode.imaging import decode_rgb
from healthgpt.model import get_preset, load_model, load_trainable
from healthgpt.storage import file_sha256
from healthgpt.train.run import current_final
from healthgpt.train.state import list_checkpoints
from healthgpt.train.validation import held_out_rows
from tests.train.test_ddp import final_metrics, stage_args, torchrun

pytestmark = pytest.mark.slow

GPU_LIKE = {
    "precision": "bf16",
    "gradient_checkpointing": True,
    "dropout": 0.1,
    "micro_batch": 2,
    # 2 ranks x micro-batch 2 x 2 accumulation steps
    "families": {"comprehension": {"global_batch": 8}, "generation": {"global_batch": 8}},
    "num_workers": 1,
    "eval_samples": 2,
    "max_new_tokens": 2,
    "log_every": 1,
    "checkpoint_every": 2,
}
STEPS = {"stage1": 2, "stage2": 2, "stage3": 6}
PRECISION = {
    "precision": "bf16",
    "frozen_lm": ["bfloat16"],
    "trainable": ["float32"],
    "autocast": "bfloat16",
    "gradient_checkpointing": True,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(stage: str, tmp: Path, mixture: Path, vq: Path) -> list[str]:
    previous = {"stage2": "stage1", "stage3": "stage2"}.get(stage)
    init = current_final(tmp / previous) if previous else None
    overrides = {**GPU_LIKE, "max_steps": STEPS[stage]}
    return torchrun(2, *stage_args(stage, mixture, tmp / stage, vq, overrides, init))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its ranks in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything it started, like a node that dies."""
    for victim in [*_descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _kill_after_first_checkpoint(command: list[str], stage_dir: Path) -> int:
    """Start torchrun; SIGKILL it and its ranks once a checkpoint exists."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            runs = list((stage_dir / "runs").glob("*")) if (stage_dir / "runs").is_dir() else []
            if runs and list_checkpoints(runs[0]):
                _kill_tree(process.pid)
                break
            time.sleep(0.05)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            _kill_tree(process.pid)
            process.wait()


def _check_stage(metrics: dict, stage: str) -> None:
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS[stage]
    assert metrics["precision"] == PRECISION
    assert metrics["samples"] == 8 * STEPS[stage]
    assert 0 < metrics["answer_tokens"] < metrics["tokens"]
    for family, report in metrics["lengths"].items():
        assert report["kept"] == report["rows"] > 0 and not report["dropped"], family
        assert report["max"] <= report["max_length"]
    for family, loss in metrics["loss"].items():
        assert math.isfinite(loss["first"]) and math.isfinite(loss["last"]), family
    losses = metrics["eval_loss_per_task"]
    assert set(losses) == {"vqa_closed", "reconstruction"}
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert metrics["closed_questions"] > 0 and "closed_accuracy" in metrics  # generate_text ran


def test_gpu_configuration_rehearsed_on_cpu(tmp_path, mixture_dir, vq_dir):
    for stage in ("stage1", "stage2"):
        done = _run(_command(stage, tmp_path, mixture_dir, vq_dir))
        _check_stage(final_metrics(done.stdout), stage)

    command = _command("stage3", tmp_path, mixture_dir, vq_dir)
    code = _kill_after_first_checkpoint(command, tmp_path / "stage3")
    assert code == -signal.SIGKILL, "stage 3 finished before it could be killed"
    assert not (tmp_path / "stage3" / "CURRENT.json").exists(), "a rank outlived the kill"
    run_dir = next((tmp_path / "stage3" / "runs").iterdir())
    saved = json.loads((list_checkpoints(run_dir)[-1] / "state.json").read_text())["step"]
    assert 2 <= saved < STEPS["stage3"]
    done = _run(command)
    assert f"from step {saved}" in done.stdout, done.stdout[-2000:]
    assert f"step {saved + 1}/{STEPS['stage3']}" in done.stdout
    assert "step 1/" not in done.stdout, "the resumed run started over"
    metrics = final_metrics(done.stdout)
    _check_stage(metrics, "stage3")
    assert metrics["final_dir"] == str(current_final(tmp_path / "stage3"))

    # Evaluation loads the stage-3 weights as it does on a GPU (a bf16 model) and generates.
    config = get_preset("tiny")
    config.vq.ckpt_path = str(Path(vq_dir) / "vq.safetensors")
    config.vq.ckpt_sha256 = file_sha256(config.vq.ckpt_path)  # verified on load
    model = load_model(config, device="cpu", dtype=torch.bfloat16)
    load_trainable(model, Path(metrics["final_dir"]) / "model.safetensors", strict=True)
    row = held_out_rows(mixture_dir / "stage3", 1, "comprehension")[0]
    image = decode_rgb(row["image"]["bytes"])
    assert isinstance(model.generate_text(image, "What modality is this image?", 2), str)
    assert model.generate_image(image, "Reconstruct this image.").size == (64, 64)
