"""A run killed after a checkpoint resumes from it and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from healthgpt.storage import file_sha256
from healthgpt.train.run import RunSpec, current_final, run_stage
from healthgpt.train.state import CheckpointError, list_checkpoints

OVERRIDES = {
    "max_steps": 30,
    "epochs": 20.0,
    "checkpoint_every": 5,
    "log_every": 5,
    "eval_samples": 2,
    "max_new_tokens": 1,
    "num_workers": 0,
}


def _command(stage_dir: Path, mixture: Path, vq: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "healthgpt.train.entry",
        "--stage",
        "stage1",
        "--mixture",
        str(mixture),
        "--out",
        str(stage_dir),
        "--vq",
        str(vq),
        "--overrides",
        json.dumps(OVERRIDES),
    ]


def _kill_after_first_checkpoint(command: list[str], stage_dir: Path) -> int:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        runs = list((stage_dir / "runs").glob("*")) if (stage_dir / "runs").is_dir() else []
        if runs and list_checkpoints(runs[0]):
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    return process.wait()


def test_kill_resume_matches_uninterrupted(tmp_path, mixture_dir, vq_dir):
    killed_dir = tmp_path / "killed"
    code = _kill_after_first_checkpoint(_command(killed_dir, mixture_dir, vq_dir), killed_dir)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = next((killed_dir / "runs").iterdir())
    saved = list_checkpoints(run_dir)[-1]
    saved_step = json.loads((saved / "state.json").read_text())["step"]
    assert 5 <= saved_step < 30

    # A tampered checkpoint stops the resume with a clear error.
    tensor_file = saved / "trainable.safetensors"
    original = tensor_file.read_bytes()
    tensor_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    spec = RunSpec("stage1", mixture_dir, killed_dir, vq_dir=vq_dir, overrides=OVERRIDES)
    with pytest.raises(CheckpointError, match="sha256"):
        run_stage(spec)
    tensor_file.write_bytes(original)

    resumed = subprocess.run(
        _command(killed_dir, mixture_dir, vq_dir), capture_output=True, text=True, check=True
    )
    assert f"from step {saved_step}" in resumed.stdout
    assert f"step {saved_step + 5}/30" in resumed.stdout
    assert "step 5/30" not in resumed.stdout, "the resumed run started over"

    straight_dir = tmp_path / "straight"
    metrics = run_stage(
        RunSpec("stage1", mixture_dir, straight_dir, vq_dir=vq_dir, overrides=OVERRIDES)
    )
    assert metrics["steps"] == 30
    killed_final, straight_final = current_final(killed_dir), current_final(straight_dir)
    state = json.loads((killed_final / "state.json").read_text())
    assert state["step"] == 30
    assert file_sha256(killed_final / "model.safetensors") == file_sha256(
        straight_final / "model.safetensors"
    ), "the resumed run diverged from the uninterrupted one"
