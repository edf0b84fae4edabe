"""The metadata a training stage reports through Dagster Pipes, as plain JSON-able values.

Built inside the training process (`pipelines.train_entry`), which has `dagster_pipes` but
not Dagster itself, so nothing here imports Dagster; `pipelines.metadata` renders the same
inline images for the assets that run in Dagster's own process.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any


def png_markdown_text(png: bytes, alt: str) -> str:
    """Markdown of an inline PNG, which the UI renders in an asset's metadata panel."""
    encoded = base64.b64encode(png).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def pipes_metadata(metrics: dict[str, Any], png: bytes | None) -> dict[str, Any]:
    """Final metrics as Pipes metadata (typed where the UI renders them specially)."""
    loss = metrics.get("loss", {})
    metadata: dict[str, Any] = {
        "steps": {"raw_value": metrics.get("steps", 0), "type": "int"},
        "tokens_per_second": {"raw_value": metrics.get("tokens_per_second", 0.0), "type": "float"},
        "samples_per_second": {
            "raw_value": metrics.get("samples_per_second", 0.0),
            "type": "float",
        },
        "peak_memory_mb": {
            "raw_value": metrics.get("peak_memory_bytes", 0) / 2**20,
            "type": "float",
        },
        "answer_tokens_per_second": {
            "raw_value": metrics.get("answer_tokens_per_second", 0.0),
            "type": "float",
        },
        "train_seconds": {"raw_value": metrics.get("train_seconds", 0.0), "type": "float"},
        # Per family: rows, kept, drops by reason, turn-boundary cuts, p50/p99/max length and
        # the share over max_length (see healthgpt.train.lengths).
        "lengths": {"raw_value": metrics.get("lengths", {}), "type": "json"},
        "dropped_samples": {
            "raw_value": sum(
                sum(report.get("dropped", {}).values())
                for report in metrics.get("lengths", {}).values()
            ),
            "type": "int",
        },
        "precision": {"raw_value": metrics.get("precision", {}), "type": "json"},
        # Share of padded batch positions (length-grouped batches) and the target images this
        # stage ran through the VQ encoder (0 when the vq_codes asset is present).
        "padding_fraction": {"raw_value": metrics.get("padding_fraction", 0.0), "type": "float"},
        "padding_fraction_per_family": {
            "raw_value": metrics.get("padding_fraction_per_family", {}),
            "type": "json",
        },
        "images_encoded": {"raw_value": metrics.get("images_encoded", 0), "type": "int"},
        "final_loss": {"raw_value": {f: v["last"] for f, v in loss.items()}, "type": "json"},
        "loss": {"raw_value": loss, "type": "json"},
        "eval_loss_per_task": {"raw_value": metrics.get("eval_loss_per_task", {}), "type": "json"},
        "eval_dropped": {"raw_value": metrics.get("eval_dropped", {}), "type": "json"},
        "final_dir": {"raw_value": metrics.get("final_dir", ""), "type": "path"},
        "files": {"raw_value": metrics.get("files", {}), "type": "json"},
        "run_key": {"raw_value": metrics.get("run_key", ""), "type": "text"},
        "config": {"raw_value": metrics.get("config", {}), "type": "json"},
    }
    if "closed_accuracy" in metrics:
        for key in ("closed_accuracy", "closed_chance"):
            metadata[key] = {"raw_value": metrics[key], "type": "float"}
        metadata["closed_examples"] = {"raw_value": metrics["closed_examples"], "type": "json"}
    if png:
        metadata["loss_curve"] = {"raw_value": png_markdown_text(png, "loss curve"), "type": "md"}
    return metadata


def loss_png(metrics: dict[str, Any]) -> bytes | None:
    path = Path(metrics.get("final_dir", "")) / "loss.png"
    return path.read_bytes() if metrics.get("final_dir") and path.is_file() else None
