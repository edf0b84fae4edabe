"""Entry point of one training stage, for torchrun, a cluster launcher, Dagster Pipes or a shell.

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m healthgpt.train.entry \\
        --stage stage1 --mixture data/mixture --out data/checkpoints/stage1 \\
        --vq data/checkpoints/vq_tokenizer --overrides '{"max_steps": 100}'

It prints progress lines and a final JSON line to stdout. Dagster launches
`pipelines.train_entry` instead, the same entry with rank 0 reporting through Pipes (the
metadata it reports is shaped in `pipelines.pipes_metadata`).
"""

from __future__ import annotations

import argparse
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
