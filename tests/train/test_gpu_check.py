"""scripts/gpu_check runs its code path on CPU with --tiny and refuses politely without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check"


def test_tiny_smoke_reports_every_number(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--gradient-checkpointing", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tokens/s" in done.stdout and "H-LoRA" in done.stdout
    assert done.stderr.strip() == "", done.stderr
    result = json.loads(out.read_text())
    assert result["tokens_per_second"] > 0
    assert result["step_seconds_hlora"] > 0 and result["step_seconds_lora"] > 0
    assert result["gradient_checkpointing"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_gpu_exits_with_a_clear_message():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stdout
