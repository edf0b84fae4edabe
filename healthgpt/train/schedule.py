"""How many optimizer steps a stage takes, which family each step trains, and its LR factor.

Families have different global batches and data sizes, so a stage is a deterministic
interleaving of per-family steps (smooth weighted round robin): each family gets its share
spread evenly over the run rather than one family after the other, which would let the
second undo the first's shared parameters (stage 2 trains embeddings for both).
"""

from __future__ import annotations

import math

from healthgpt.train.config import StageConfig


def accumulation(config: StageConfig, family: str, world: int) -> int:
    """Micro-batches per optimizer step per rank for `family`'s global batch."""
    per_step = config.micro_batch * world
    global_batch = config.families[family].global_batch
    if global_batch % per_step:
        raise ValueError(
            f"{family}: global batch {global_batch} is not a multiple of micro batch "
            f"{config.micro_batch} x world {world}"
        )
    return global_batch // per_step


def steps_per_family(config: StageConfig, rows: dict[str, int]) -> dict[str, int]:
    """Optimizer steps per family: `epochs` passes over its rows, scaled down to `max_steps`."""
    steps = {
        family: max(
            1, math.ceil(config.epochs * rows[family] / config.families[family].global_batch)
        )
        for family in config.families
        if rows.get(family, 0) > 0
    }
    total = sum(steps.values())
    if config.max_steps and total > config.max_steps:
        scale = config.max_steps / total
        steps = {f: max(1, round(n * scale)) for f, n in steps.items()}
        while sum(steps.values()) > config.max_steps:  # rounding overshoot: trim the largest
            biggest = max(steps, key=steps.get)
            steps[biggest] -= 1
    return steps


def family_order(steps: dict[str, int]) -> list[str]:
    """Interleave families so each one's steps are spread evenly (deterministic)."""
    total = sum(steps.values())
    current = dict.fromkeys(steps, 0.0)
    order = []
    for _ in range(total):
        for family, n in steps.items():
            current[family] += n
        pick = max(sorted(current), key=current.get)
        current[pick] -= total
        order.append(pick)
    return order


def lr_factor(config: StageConfig, step: int, total: int) -> float:
    """Linear warmup, then cosine decay to zero (or constant). With any warmup at all, the
    first step runs below the full rate, however few steps a family has (a 20-step family
    at ratio 0.05 still warms up: 1/2, then 1)."""
    warmup = math.ceil(config.warmup_ratio * total)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
