"""A toy source that reads slowly, to interrupt ingestions in the middle (reliability tests).

Run as a module, it is `healthgpt ingest` with this source registered:

    python -m tests.pipelines.slow_source --root R --out O --quiet

Environment: `SLOW_SOURCE_N` items (default 60), `SLOW_SOURCE_SLEEP` seconds per item
(default 0), and `SLOW_SOURCE_HALFWAY`: a file created when half the items are read.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from healthgpt.data import sources
from healthgpt.data.schema import new_record
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader
from tests.conftest import png_bytes

NAME = "slowtoy"


class SlowReader(SourceReader):
    name = NAME
    expected_layout = "slowtoy/  (any directory)"

    def items(self) -> Iterator[Outcome]:
        n = int(os.environ.get("SLOW_SOURCE_N", "60"))
        pause = float(os.environ.get("SLOW_SOURCE_SLEEP", "0"))
        halfway = os.environ.get("SLOW_SOURCE_HALFWAY")
        for index in range(n):
            if halfway and index == n // 2:
                Path(halfway).touch()
            time.sleep(pause)

            def build(index: int = index) -> list[dict]:
                if index % 17 == 16:
                    raise BadInput(f"item {index} is planted bad")
                return [
                    new_record(
                        source=NAME,
                        orig_id=str(index),
                        split="validation" if index % 7 == 0 else "train",
                        kind="vqa",
                        modality="MRI",
                        image=png_bytes(index, size=64),
                        question=f"Which item is this ({index})?",
                        answer=str(index),
                        answer_type="open",
                    )
                ]

            yield self.guard(str(index), f"{index}.png", build)


def register() -> None:
    sources.SOURCES[NAME] = "tests.pipelines.slow_source:SlowReader"


if __name__ == "__main__":
    register()
    from healthgpt.cli import main

    raise SystemExit(main(["ingest", NAME, *sys.argv[1:]]))
