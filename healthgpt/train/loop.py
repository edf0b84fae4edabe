"""The training loop, small enough to hold in one's head (nanoGPT style).

    for step in range(start, total):
        family = order[step]                         # which task family this step trains
        micro = next accumulation[family] micro-batches of that family
        N = answer tokens in micro, summed over all ranks (the global batch's)
        for batch in micro:                          # gradient accumulation, DDP-synced last
            seed dropout from (seed, family, global micro-batch index)
            (summed answer-token loss of batch / (N / world)).backward()
        clip, set the family's LRs from its own schedule, optimizer.step(), zero_grad
        log (rank 0), checkpoint every `checkpoint_every` steps

The loss of a step is the mean over every answer token of its global batch, however the batch
is split into micro-batches and ranks (DDP averages gradients over ranks, hence N / world):
1 x 8, 2 x 4 and 4 x 2 give the same gradient. Dropout is seeded per global micro-batch, so
ranks draw different masks, and a micro-batch (the same samples at any world size, see
`healthgpt.train.data`) draws the same masks at any world size and after a resume. Warmup and
decay run per family over that family's own steps: a family's first step is a warmup step
whatever the other family did before it.

Everything stateful that a resume needs lives in `Progress` (plus model, optimizer and RNG),
which the checkpoint stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from healthgpt.model.constants import IGNORE_INDEX
from healthgpt.model.healthgpt import HealthGPTOutput
from healthgpt.train.config import StageConfig
from healthgpt.train.data import global_micro_batch
from healthgpt.train.distributed import Dist, sum_across
from healthgpt.train.schedule import lr_factor


@dataclass
class Progress:
    """Where a run is: optimizer steps done, micro-batches consumed per family, loss history,
    and the tokens (all positions) and answer tokens (those with a label) trained on."""

    step: int = 0
    consumed: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    answer_tokens: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    # Per family: [tokens, padded positions] of the batches trained on (padding_fraction).
    positions: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "consumed": self.consumed,
            "history": self.history,
            "tokens": self.tokens,
            "answer_tokens": self.answer_tokens,
            "samples": self.samples,
            "train_seconds": self.train_seconds,
            "positions": self.positions,
        }

    def padding_fraction(self, family: str | None = None) -> float:
        """Share of the batches' positions that were padding (one family's, or all)."""
        counts = [self.positions[family]] if family else list(self.positions.values())
        tokens, positions = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return round(1.0 - tokens / positions, 5) if positions else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class StepModel:
    """What the loop needs from the model side (see `model_api.ModelBundle`)."""

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]: ...
    def forward(self, model: nn.Module, batch: dict[str, Any]) -> HealthGPTOutput: ...


def answer_tokens(batch: dict[str, Any]) -> int:
    """Positions of a batch whose next token is a label (what the loss averages over)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def dropout_seed(seed: int, family: str, micro_batch: int) -> int:
    """The RNG seed of one global micro-batch of a family (distinct per rank and step)."""
    digest = hashlib.sha256(f"{seed}/{family}/{micro_batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class StepStats:
    """One optimizer step over all ranks: mean loss per answer token, and the counts
    (`positions`: padded batch positions, tokens plus padding)."""

    loss: float
    answer_tokens: int
    tokens: int
    samples: int
    positions: int = 0


def accumulate(
    model: nn.Module,
    bundle: StepModel,
    micro_batches: Sequence[dict[str, Any]],
    d: Dist,
    seeds: Sequence[int] | None = None,
) -> StepStats:
    """Forward and backward of one optimizer step's micro-batches (on this rank), the loss
    normalized by the answer tokens of the whole global batch (all micro-batches, all ranks).

    The micro-batches are counted where the loader left them and moved to the device one at a
    time. `seeds`: one RNG seed per micro-batch, set before its forward (dropout)."""
    (total,) = sum_across([sum(answer_tokens(b) for b in micro_batches)], d)
    norm = max(total, 1) / d.world  # DDP averages over ranks: each rank's share of the sum
    loss_sum, tokens, samples, positions = 0.0, 0, 0, 0
    last = len(micro_batches) - 1
    for i, batch in enumerate(micro_batches):
        batch = bundle.prepare(batch, d.device)
        if seeds is not None:
            torch.manual_seed(seeds[i])
        sync = i == last or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            out = bundle.forward(model, {**batch, "num_items_in_batch": norm})
            out.loss.backward()
        loss_sum += out.loss_sum
        tokens += int(batch["attention_mask"].sum())
        samples += int(batch["attention_mask"].shape[0])
        positions += int(batch["attention_mask"].numel())
    loss_sum, tokens, samples, positions = sum_across([loss_sum, tokens, samples, positions], d)
    return StepStats(
        loss_sum / max(total, 1), int(total), int(tokens), int(samples), int(positions)
    )


def family_steps(order: Sequence[str]) -> list[int]:
    """For each step of `order`, how many steps of its family come before it."""
    seen: dict[str, int] = {}
    numbers = []
    for family in order:
        numbers.append(seen.get(family, 0))
        seen[family] = numbers[-1] + 1
    return numbers


def family_lrs(optimizer: torch.optim.Optimizer, groups: Sequence[str]) -> dict[str, float]:
    """The current LR of each named optimizer group in `groups` (one family's)."""
    return {g["name"]: g["lr"] for g in optimizer.param_groups if g.get("name") in groups}


def fit(
    *,
    config: StageConfig,
    bundle: StepModel,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: dict[str, Iterator[dict[str, Any]]],
    order: list[str],
    accumulation: dict[str, int],
    progress: Progress,
    d: Dist,
    log: Callable[[str], None],
    save: Callable[[Progress], None],
) -> Progress:
    """Run the optimizer steps from `progress.step` to `len(order)`; return the progress."""
    total = len(order)
    numbers = family_steps(order)
    per_family = {family: order.count(family) for family in dict.fromkeys(order)}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    window = {"tokens": 0, "answer_tokens": 0, "samples": 0}
    window_start = time.perf_counter()
    model.train()
    while progress.step < total:
        step_start = time.perf_counter()
        family = order[progress.step]
        accum = accumulation[family]
        first = progress.consumed.get(family, 0)
        micro = [next(batches[family]) for _ in range(accum)]
        progress.consumed[family] = first + accum
        seeds = [
            dropout_seed(config.seed, family, global_micro_batch(first + i, d.rank, d.world))
            for i in range(accum)
        ]
        stats = accumulate(model, bundle, micro, d, seeds)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        factor = lr_factor(config, numbers[progress.step], per_family[family])
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        lrs = family_lrs(optimizer, config.families[family].trainable)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        progress.step += 1
        progress.tokens += stats.tokens
        progress.answer_tokens += stats.answer_tokens
        progress.samples += stats.samples
        counts = progress.positions.setdefault(family, [0, 0])
        counts[0] += stats.tokens
        counts[1] += stats.positions
        progress.train_seconds += time.perf_counter() - step_start
        progress.history.append(
            {
                "step": progress.step,
                "family": family,
                "loss": round(stats.loss, 5),
                "lr": lrs,
                "answer_tokens": stats.answer_tokens,
                "tokens": stats.tokens,
                "samples": stats.samples,
            }
        )
        for key in window:
            window[key] += getattr(stats, key)
        if d.is_main and (progress.step % config.log_every == 0 or progress.step == total):
            seconds = max(time.perf_counter() - window_start, 1e-9)
            rates = " ".join(f"{group} {lr:.2e}" for group, lr in lrs.items())
            log(
                f"step {progress.step}/{total} {family} loss {stats.loss:.4f} lr {rates} "
                f"answer tokens/s {window['answer_tokens'] / seconds:.0f} "
                f"tokens/s {window['tokens'] / seconds:.0f} "
                f"samples/s {window['samples'] / seconds:.2f}"
            )
            window = dict.fromkeys(window, 0)
            window_start = time.perf_counter()
        if progress.step % config.checkpoint_every == 0 and progress.step < total:
            save(progress)
    return progress


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
