"""Benchmarks (`make bench`): each reports ratios measured within one run and writes its
figures as JSON to `benchmarks/results/`, or to `$HEALTHGPT_BENCH_RESULTS` when set (the
smoke tests point it at a temporary directory so they never overwrite measured figures)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from healthgpt.storage import atomic_write_text

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def write_result(name: str, result: dict[str, Any]) -> Path:
    """`<results>/<name>.json`, written atomically."""
    directory = Path(os.environ.get("HEALTHGPT_BENCH_RESULTS") or DEFAULT_RESULTS)
    path = directory / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def baseline_code(ref: str, into: Path) -> Path:
    """`healthgpt` (and the data manifests) as of git `ref`, beside this `benchmarks`
    package: run a benchmark child with `cwd=` this directory to measure the baseline
    through the same harness, in the same run as the current code."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "healthgpt", "data_manifests"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copytree(REPO / "benchmarks", into / "benchmarks")
    return into


def spread(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median, min and max of `key` over repeated runs."""
    values = [run[key] for run in runs]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }
