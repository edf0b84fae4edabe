"""Benchmarks (`make bench`): each reports ratios measured within one run and writes its
figures as JSON to `benchmarks/results/`, or to `$HEALTHGPT_BENCH_RESULTS` when set (the
smoke tests point it at a temporary directory so they never overwrite measured figures)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from healthgpt.storage import atomic_write_text

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """`<results>/<name>.json`, written atomically."""
    directory = Path(os.environ.get("HEALTHGPT_BENCH_RESULTS") or DEFAULT_RESULTS)
    path = directory / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path
