"""Turning library results into Dagster metadata: tables, charts and images in the UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pipelines.pipes_metadata import png_markdown_text


def png_markdown(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    """An inline PNG the UI renders in the asset's metadata panel."""
    return dg.MetadataValue.md(png_markdown_text(png, alt))


def counts_table(counts: Mapping[str, int], key: str = "value") -> dg.MarkdownMetadataValue:
    rows = "\n".join(f"| {name} | {count} |" for name, count in sorted(counts.items()))
    return dg.MetadataValue.md(f"| {key} | count |\n|---|---|\n{rows}")


def records_table(rows: Sequence[Mapping[str, Any]], limit: int = 10) -> dg.MarkdownMetadataValue:
    """A small preview table of records (text fields only, truncated)."""
    if not rows:
        return dg.MetadataValue.md("_no records_")
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")[:60]

    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = "\n".join(
        "| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows[:limit]
    )
    return dg.MetadataValue.md(f"{header}\n{body}")


def shard_metadata(shards: Sequence[Any]) -> dict[str, dg.MetadataValue]:
    return {
        "shards": dg.MetadataValue.json(
            [{"path": s.path, "rows": s.rows, "bytes": s.bytes, "sha256": s.sha256} for s in shards]
        ),
        "bytes": dg.MetadataValue.int(sum(s.bytes for s in shards)),
    }
