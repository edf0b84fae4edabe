"""Before a stage trains: how long its samples are, and which ones cannot be trained on.

Every training row of each family is formatted once (text only: images are fixed-size runs of
positions, generation targets are their precomputed VQ code text) with the same formatter the
DataLoader workers use, so what is measured here is exactly what a batch would hold. A row
whose answer or image would be cut by `max_length`, or that has no answer, is dropped from the
family's row index with its reason counted; a multi-turn conversation that only fits without
its last turns keeps its whole leading turns and the dropped turns are counted. Nothing is cut
silently and no sample without labels reaches a batch. The counts and the length statistics
(p50, p99, max, share over `max_length`) go to the log before the first step and into the
stage's metadata. Each rank formats its share of the row groups and the ranks add up their
tables, so every rank ends with the same index at 1/world of the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from healthgpt.data.shards import open_shard
from healthgpt.model.prompt import DROP_REASONS, Fit
from healthgpt.train.data import RowIndex
from healthgpt.train.model_api import TARGET_IMAGE_CUT

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


REASONS = (*DROP_REASONS, TARGET_IMAGE_CUT)  # reason k is stored as code k + 1 (0: kept)


def measure(
    index: RowIndex, fit_row: Callable[[dict[str, Any]], Fit], rank: int = 0, world: int = 1
) -> np.ndarray:
    """Fit the rows of every `world`-th row group of `index`, from the `rank`-th: a [4, n]
    int64 table of (measured, length, reason code, turns dropped) per row, zero where another
    rank measures. Summing the ranks' tables gives the whole index's."""
    table = np.zeros((4, len(index)), dtype=np.int64)
    for unit, (file, group, positions) in enumerate(index.row_groups()):
        if unit % world != rank:
            continue
        parquet = open_shard(index.files[file])
        rows = parquet.read_row_group(group, columns=SCREEN_COLUMNS).take(index.row[positions])
        for position, row in zip(positions, rows.to_pylist(), strict=True):
            fit = fit_row(row)
            code = 0 if fit.reason is None else REASONS.index(fit.reason) + 1
            table[:, position] = (1, fit.length, code, fit.turns_dropped)
    return table


def summarize(table: np.ndarray, max_length: int) -> tuple[np.ndarray, LengthReport]:
    """The mask of trainable rows and the report, from a complete `measure` table."""
    measured, lengths, codes, turns = table
    if not (measured == 1).all():
        raise RuntimeError("length table incomplete or measured twice: ranks disagree")
    keep = codes == 0
    dropped = {REASONS[c - 1]: int((codes == c).sum()) for c in sorted(set(codes[~keep]))}
    report = LengthReport(
        rows=len(codes),
        kept=int(keep.sum()),
        max_length=max_length,
        dropped=dropped,
        shortened=int((turns > 0).sum()),
        turns_dropped=int(turns.sum()),
    )
    if len(codes):
        report.p50 = float(np.percentile(lengths, 50))
        report.p99 = float(np.percentile(lengths, 99))
        report.max = int(lengths.max())
        report.over_max_length = float((lengths > max_length).mean())
    return keep, report


def screen(
    index: RowIndex,
    fit_row: Callable[[dict[str, Any]], Fit],
    max_length: int,
    rank: int = 0,
    world: int = 1,
    combine: Callable[[np.ndarray], np.ndarray] = lambda table: table,
) -> tuple[np.ndarray, LengthReport, np.ndarray]:
    """Fit every row of `index`; return the mask of trainable rows, the family's report and
    the kept rows' trained lengths (capped at `max_length`: a conversation cut at a turn
    boundary fits), in the order of `index.select(mask)`, for length-grouped batches.

    With several ranks each fits its share of row groups and `combine` sums the tables (an
    all-reduce), so the formatting pass costs each rank 1/world of the rows."""
    table = combine(measure(index, fit_row, rank, world))
    keep, report = summarize(table, max_length)
    return keep, report, np.minimum(table[1][keep], max_length)
