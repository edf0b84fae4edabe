"""The training entry point as Dagster launches it: `healthgpt.train.entry` with Pipes.

    python -m torch.distributed.run --standalone --nproc_per_node=N -m pipelines.train_entry \\
        --stage stage1 --mixture ... --out ...

Rank 0 opens the Pipes channel when the launcher provided one: its log lines go to the
Dagster run log and its final metrics become the asset's materialization metadata. Other
ranks, and runs without Pipes, behave exactly like `healthgpt.train.entry`.
"""

import os
import sys
from typing import Any

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

from healthgpt.train.entry import main as plain_main
from healthgpt.train.entry import spec_from_args
from healthgpt.train.run import Reporter, run_stage
from pipelines.pipes_metadata import loss_png, pipes_metadata


def main(argv: list[str] | None = None) -> int:
    if int(os.environ.get("RANK", 0)) != 0 or DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        return plain_main(argv)
    spec = spec_from_args(argv)
    with open_dagster_pipes() as pipes:

        def log(message: str) -> None:
            print(message, flush=True)
            pipes.log.info(message)

        def final(metrics: dict[str, Any]) -> None:
            pipes.report_asset_materialization(metadata=pipes_metadata(metrics, loss_png(metrics)))

        run_stage(spec, Reporter(log=log, final=final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
