"""Helpers for tests that read what `ingest()` wrote: records, quarantine rows, PHI scans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from healthgpt.data.ingest.run import IngestSummary, ingest
from healthgpt.data.sources import ReaderOptions


def run(source: str, root: Path, out: Path, **options: Any) -> IngestSummary:
    """Ingest and assert the counts reconcile (every item accepted or quarantined)."""
    summary = ingest(source, root, out, ReaderOptions(**options))
    assert summary.items == summary.accepted_items + summary.quarantined
    return summary


def records(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((out / "data").glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def quarantine(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "quarantine.parquet").to_pylist()


def string_values(out: Path) -> list[str]:
    """Every string in every string column of every shard and the quarantine table, plus
    the manifest's text: the places PHI could leak to."""
    values: list[str] = []
    for path in sorted(out.rglob("*.parquet")):
        table = pq.read_table(path)
        for column in table.columns:
            values.extend(_strings(column.type, column.to_pylist()))
    values.append((out / "_manifest.json").read_text())
    return values


def _strings(kind: pa.DataType, items: list[Any]) -> list[str]:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [v for v in items if v is not None]
    if pa.types.is_struct(kind) or pa.types.is_list(kind):
        return [s for v in items if v is not None for s in _walk(v)]
    return []


def _walk(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _walk(v)]
    if isinstance(value, list):
        return [s for v in value for s in _walk(v)]
    return []


def assert_no_phi(out: Path, planted: list[str] | tuple[str, ...]) -> None:
    """No planted PHI value appears (case-insensitively) in any output string."""
    haystack = [v.lower() for v in string_values(out)]
    assert haystack, "nothing was scanned"
    for secret in planted:
        hits = [v[:120] for v in haystack if secret.lower() in v]
        assert not hits, f"PHI {secret!r} leaked into outputs: {hits[:3]}"


def meta(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["meta"] or "{}")


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path (to compare two sample builds)."""
    import hashlib

    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def manifest_sample_counts(source: str) -> dict[str, int]:
    """`expected_counts.sample` of data_manifests/<source>.yaml."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "data_manifests" / f"{source}.yaml"
    return yaml.safe_load(path.read_text())["expected_counts"]["sample"]
