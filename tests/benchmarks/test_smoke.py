"""Every benchmark runs end to end at a tiny size and writes its figures, so `make bench`
cannot rot unnoticed (figures at this size mean nothing; only that they are produced)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = {
    "ingest": (
        ["--images", "12", "--growth", "2", "--repeats", "1"],
        "same_process_ratio_to_floor_with_identities",
    ),
    "mixture": (
        ["--records", "120", "--growth", "2", "--workers", "1", "--repeats", "1"],
        "rss_growth_ratio",
    ),
    "hlora": (["--quick", "--no-m3-layer", "--hlora-only"], "markdown"),
    "train": (["--quick"], "train_samples_per_s"),
    "padding": ([], "demo_mixture_stage3"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_and_writes_its_figures(name, tmp_path):
    args, key = CASES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHGPT_")}
    env["HEALTHGPT_BENCH_RESULTS"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.bench_{name}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result[key] not in (None, "", 0)
