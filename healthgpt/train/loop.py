"""The training loop, small enough to hold in one's head (nanoGPT style).

    for step in range(start, total):
        family = order[step]                         # which task family this step trains
        for micro in range(accumulation[family]):    # gradient accumulation, DDP-synced last
            loss = model(batch of family) / accumulation
            loss.backward()
        clip, set LRs from the schedule, optimizer.step(), zero_grad
        log (rank 0), checkpoint every `checkpoint_every` steps

Everything stateful that a resume needs lives in `Progress` (plus model, optimizer and RNG),
which the checkpoint stores.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from healthgpt.train.config import StageConfig
from healthgpt.train.distributed import Dist, sum_across
from healthgpt.train.schedule import lr_factor


@dataclass
class Progress:
    """Where a run is: optimizer steps done, micro-batches consumed per family, loss history."""

    step: int = 0
    consumed: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    samples: int = 0
    train_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "consumed": self.consumed,
            "history": self.history,
            "tokens": self.tokens,
            "samples": self.samples,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class StepModel:
    """What the loop needs from the model side (see `model_api.ModelBundle`)."""

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]: ...
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...


def autocast(config: StageConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs; fp32 elsewhere (CPU bf16 autocast is slow and not the target)."""
    if config.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    params = [p for group in optimizer.param_groups for p in group["params"]]
    window_tokens, window_samples, window_start = 0, 0, time.perf_counter()
    model.train()
    while progress.step < total:
        step_start = time.perf_counter()
        family = order[progress.step]
        accum = accumulation[family]
        loss_sum, tokens, samples = 0.0, 0, 0
        for micro in range(accum):
            batch = bundle.prepare(next(batches[family]), d.device)
            progress.consumed[family] = progress.consumed.get(family, 0) + 1
            sync = micro == accum - 1 or not hasattr(model, "no_sync")
            with contextlib.nullcontext() if sync else model.no_sync(), autocast(config, d.device):
                loss = bundle.loss(model, batch)
            (loss / accum).backward()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
            samples += int(batch["attention_mask"].shape[0])
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        factor = lr_factor(config, progress.step, total)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        loss_mean, tokens, samples = sum_across([loss_sum / accum, tokens, samples], d)
        loss_mean /= d.world
        progress.step += 1
        progress.tokens += int(tokens)
        progress.samples += int(samples)
        progress.train_seconds += time.perf_counter() - step_start
        lr = optimizer.param_groups[0]["lr"]
        progress.history.append(
            {"step": progress.step, "family": family, "loss": round(loss_mean, 5), "lr": lr}
        )
        window_tokens += tokens
        window_samples += samples
        if d.is_main and (progress.step % config.log_every == 0 or progress.step == total):
            seconds = max(time.perf_counter() - window_start, 1e-9)
            log(
                f"step {progress.step}/{total} {family} loss {loss_mean:.4f} lr {lr:.2e} "
                f"tokens/s {window_tokens / seconds:.0f} samples/s {window_samples / seconds:.2f}"
            )
            window_tokens, window_samples, window_start = 0, 0, time.perf_counter()
        if progress.step % config.checkpoint_every == 0 and progress.step < total:
            save(progress)
    return progress


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
