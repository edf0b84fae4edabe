"""The seeded sampler: how many samples each (source, task) group gives each stage, and which.

- Stage 1 and stage 3: a group of `n` available samples with weight `w` and cap `c` gives
  `k = min(c, round(n * w))` samples. `w < 1` subsamples, `w > 1` repeats (every sample
  `k // n` times, plus one more for the `k % n` first in the seeded order).
- Stage 2: `stage2_size` distinct samples drawn from stage 1, allocated to the groups in
  proportion to their stage-1 size (largest remainder), so the fusion set mirrors stage 1.
- Which samples: each sample has a per-stage rank, a hash of (seed, stage, sample id); the
  lowest ranks are taken. This is order-independent and stable: raising a cap only adds.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import polars as pl

from healthgpt.data.mixture.config import MixtureConfig, includes, rule_value
from healthgpt.data.tasks import STAGE1, STAGE2


@dataclass(frozen=True)
class GroupPlan:
    """One (stage, source, task) group: what was available and what the config asks for."""

    stage: str
    source: str
    task: str
    available: int
    weight: float
    cap: int | None
    target: int

    def to_dict(self) -> dict:
        return asdict(self)


def ranks(seed: int, sample_id: str) -> tuple[int, int, int]:
    """Per-stage sampling ranks (three independent 64-bit values from one digest)."""
    digest = hashlib.sha256(f"{seed}\x1frank\x1f{sample_id}".encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 8], "big") for i in (0, 8, 16))


def group_target(available: int, weight: float, cap: int | None) -> int:
    target = math.floor(available * weight + 0.5)
    return target if cap is None else min(target, cap)


def stage_rules(config: MixtureConfig, stage: str) -> tuple[list[str], dict, dict]:
    if stage == STAGE1:
        return config.stage1_include, config.stage1_weights, config.stage1_caps
    return config.stage3_include, config.stage3_weights, config.stage3_caps


def plan_stage(config: MixtureConfig, stage: str, available: dict[tuple[str, str], int]):
    """GroupPlans for stage 1 or 3 from the available (source, task) counts."""
    include, weights, caps = stage_rules(config, stage)
    plans = []
    for (source, task), n in sorted(available.items()):
        if not includes(include, source, task):
            continue
        weight = float(rule_value(weights, source, task, 1.0))
        cap = rule_value(caps, source, task, None)
        plans.append(GroupPlan(stage, source, task, n, weight, cap, group_target(n, weight, cap)))
    return plans


def plan_stage2(size: int, stage1_sizes: dict[tuple[str, str], int]) -> list[GroupPlan]:
    """Largest-remainder allocation of `size` over the stage-1 groups (distinct samples)."""
    total = sum(stage1_sizes.values())
    size = min(size, total)
    if not total or size <= 0:
        return []
    quotas = {g: size * n / total for g, n in stage1_sizes.items()}
    alloc = {g: math.floor(q) for g, q in quotas.items()}
    leftover = size - sum(alloc.values())
    by_remainder = sorted(quotas, key=lambda g: (-(quotas[g] - alloc[g]), g))
    for g in by_remainder[:leftover]:
        alloc[g] += 1
    return [
        GroupPlan(STAGE2, g[0], g[1], stage1_sizes[g], 1.0, None, alloc[g])
        for g in sorted(stage1_sizes)
        if alloc[g] > 0
    ]


def select(frame: pl.DataFrame, plans: list[GroupPlan], rank: str) -> pl.DataFrame:
    """(seq, copies) of the samples the plans select from `frame` (one row per sample)."""
    if not plans:
        return pl.DataFrame(schema={"seq": pl.UInt64, "copies": pl.UInt32})
    targets = pl.DataFrame(
        {
            "source": [p.source for p in plans],
            "task": [p.task for p in plans],
            "n": [p.available for p in plans],
            "k": [p.target for p in plans],
        },
        schema={"source": pl.String, "task": pl.String, "n": pl.Int64, "k": pl.Int64},
    ).cast({"source": frame.schema["source"], "task": frame.schema["task"]})
    ranked = frame.join(targets, on=["source", "task"], how="inner").with_columns(
        pos=pl.col(rank).rank("ordinal").over(["source", "task"]).cast(pl.Int64) - 1
    )
    copies = (pl.col("k") // pl.col("n")) + (pl.col("pos") < (pl.col("k") % pl.col("n"))).cast(
        pl.Int64
    )
    return (
        ranked.with_columns(copies=copies.cast(pl.UInt32))
        .filter(pl.col("copies") > 0)
        .select("seq", "copies")
        .sort("seq")
    )


def group_counts(frame: pl.DataFrame) -> dict[tuple[str, str], int]:
    counts = frame.group_by("source", "task").len()
    return {(r["source"], r["task"]): r["len"] for r in counts.iter_rows(named=True)}
