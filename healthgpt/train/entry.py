"""Entry point of one training stage, for torchrun, a cluster launcher, Dagster Pipes or a shell.

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m healthgpt.train.entry \\
        --stage stage1 --mixture data/mixture --out data/checkpoints/stage1 \\
        --vq data/checkpoints/vq_tokenizer --overrides '{"max_steps": 100}'

It prints progress lines and a final JSON line to stdout. Dagster launches
`pipelines.train_entry` instead, the same entry with rank 0 reporting through Pipes; the
metadata shaping (`pipes_metadata`) lives here so both stay in step.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from healthgpt.train.config import STAGES
from healthgpt.train.run import Reporter, RunSpec, run_stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthgpt.train.entry", description=__doc__)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument(
        "--mixture", required=True, help="mixture dir or object-store URL (has stageN/)"
    )
    parser.add_argument("--out", required=True, type=Path, help="this stage's checkpoint dir")
    parser.add_argument("--init", type=Path, help="previous stage's final dir")
    parser.add_argument("--vq", type=Path, help="VQ tokenizer dir (vq.json)")
    parser.add_argument("--overrides", default="{}", help="JSON dict of config overrides")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    return parser


def spec_from_args(argv: list[str] | None = None) -> RunSpec:
    args = build_parser().parse_args(argv)
    overrides = json.loads(args.overrides)
    if not isinstance(overrides, dict):
        raise SystemExit("--overrides must be a JSON object")
    return RunSpec(
        stage=args.stage,
        mixture_dir=args.mixture,
        out_dir=args.out,
        init_dir=args.init,
        vq_dir=args.vq,
        overrides=overrides,
        device=args.device,
    )


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
        encoded = base64.b64encode(png).decode()
        metadata["loss_curve"] = {
            "raw_value": f"![loss curve](data:image/png;base64,{encoded})",
            "type": "md",
        }
    return metadata


def loss_png(metrics: dict[str, Any]) -> bytes | None:
    path = Path(metrics.get("final_dir", "")) / "loss.png"
    return path.read_bytes() if metrics.get("final_dir") and path.is_file() else None


def final_json_line(metrics: dict[str, Any]) -> None:
    print("FINAL " + json.dumps(metrics, sort_keys=True, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run a stage, printing progress lines and a final JSON line (no orchestrator)."""
    run_stage(
        spec_from_args(argv), Reporter(log=lambda m: print(m, flush=True), final=final_json_line)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
