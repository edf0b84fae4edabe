"""Before a stage trains: how long its samples are, and which ones cannot be trained on.

Every training row of each family is formatted once (text only: images are fixed-size runs of
positions, generation targets are their precomputed VQ code text) with the same formatter the
DataLoader workers use, so what is measured here is exactly what a batch would hold. A row
whose answer or image would be cut by `max_length`, or that has no answer, is dropped from the
family's row index with its reason counted; a multi-turn conversation that only fits without
its last turns keeps its whole leading turns and the dropped turns are counted. Nothing is cut
silently and no sample without labels reaches a batch. The counts and the length statistics
(p50, p99, max, share over `max_length`) go to the log before the first step and into the
stage's metadata.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from healthgpt.data.shards import open_shard
from healthgpt.model.prompt import Fit
from healthgpt.train.data import RowIndex

SCREEN_COLUMNS = ["id", "task_family", "conversations"]


@dataclass
class LengthReport:
    """One family's screening: rows, kept rows, drops by reason, and token lengths.

    Lengths are of the whole conversation before any cut; `over_max_length` is the share of
    rows longer than `max_length` (dropped or cut at a turn boundary)."""

    rows: int
    kept: int
    max_length: int
    dropped: dict[str, int] = field(default_factory=dict)
    shortened: int = 0  # kept, but with later turns cut off at a turn boundary
    turns_dropped: int = 0  # assistant turns those cuts removed
    p50: float = 0.0
    p99: float = 0.0
    max: int = 0
    over_max_length: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
        return (
            f"{self.rows} rows, length p50 {self.p50:.0f} p99 {self.p99:.0f} max {self.max}, "
            f"{self.over_max_length:.1%} over max_length {self.max_length}; "
            f"kept {self.kept}, dropped {sum(self.dropped.values())}"
            + (f" ({drops})" if drops else "")
            + (
                f", {self.shortened} cut at a turn boundary ({self.turns_dropped} answers)"
                if self.shortened
                else ""
            )
        )


def screen(
    index: RowIndex, fit_row: Callable[[dict[str, Any]], Fit], max_length: int
) -> tuple[np.ndarray, LengthReport]:
    """Fit every row of `index`; return the mask of trainable rows and the family's report."""
    lengths = np.zeros(len(index), dtype=np.int64)
    keep = np.zeros(len(index), dtype=bool)
    dropped: Counter[str] = Counter()
    shortened = turns = 0
    for file, group, positions in index.row_groups():
        table = open_shard(index.files[file]).read_row_group(group, columns=SCREEN_COLUMNS)
        rows = table.take(index.row[positions]).to_pylist()
        for position, row in zip(positions, rows, strict=True):
            fit = fit_row(row)
            lengths[position] = fit.length
            if fit.dropped:
                dropped[fit.reason] += 1
                continue
            keep[position] = True
            if fit.turns_dropped:
                shortened += 1
                turns += fit.turns_dropped
    report = LengthReport(
        rows=len(index),
        kept=int(keep.sum()),
        max_length=max_length,
        dropped=dict(sorted(dropped.items())),
        shortened=shortened,
        turns_dropped=turns,
    )
    if len(index):
        report.p50 = float(np.percentile(lengths, 50))
        report.p99 = float(np.percentile(lengths, 99))
        report.max = int(lengths.max())
        report.over_max_length = float((lengths > max_length).mean())
    return keep, report
