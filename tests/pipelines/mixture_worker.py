"""Builds a mixture in its own process, slowly, so a test can SIGKILL it mid-write.

    python -m tests.pipelines.mixture_worker INGESTED OUT [MARKER]

With MARKER, each written batch sleeps and the first one creates MARKER.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from healthgpt.data.mixture import build as mixture
from healthgpt.data.mixture.config import sample_preset


def main(ingested: str, out: str, marker: str | None = None) -> None:
    if marker:
        write_jobs = mixture._write_jobs

        def slow_write_jobs(*args, **kwargs):
            write_jobs(*args, **kwargs)
            Path(marker).touch()
            time.sleep(0.5)

        mixture._write_jobs = slow_write_jobs
    config = sample_preset(batch_rows=4, stage2_size=8)
    mixture.build_mixture({"toy": Path(ingested)}, Path(out), config)


if __name__ == "__main__":
    main(*sys.argv[1:])
