"""What each stage freezes and trains, and the optimizer that follows from it.

The model exposes its parameters by group (`model_api.parameter_groups`); a stage config
names the groups each task family trains and their LRs. Everything else is frozen, the LM's
base weights and the vision tower always. The tests drive this with a table of the paper's
stages, so a change to either side that trains the wrong thing fails there.
"""

from __future__ import annotations

import torch
from torch import nn

from healthgpt.train.config import StageConfig


def freeze_for_stage(
    model: nn.Module, groups: dict[str, dict[str, nn.Parameter]], config: StageConfig
) -> dict[str, dict[str, nn.Parameter]]:
    """Freeze every parameter of `model`, then unfreeze the stage's groups; return those."""
    wanted = config.trainable_groups()
    missing = [g for g in wanted if not groups.get(g)]
    if missing:
        raise ValueError(f"{config.stage}: the model has no parameters in groups {missing}")
    model.requires_grad_(False)
    trainable = {group: groups[group] for group in wanted}
    for params in trainable.values():
        for param in params.values():
            param.requires_grad_(True)
    return trainable


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def build_optimizer(
    trainable: dict[str, dict[str, nn.Parameter]], config: StageConfig, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW with one param group per parameter group (each with its own LR), weight decay 0.

    `base_lr` is kept on each group so the loop can apply the schedule by multiplication.
    """
    lrs = config.trainable_groups()
    seen: set[int] = set()  # tied embeddings and head are one tensor: optimize it once
    param_groups = []
    for group, params in trainable.items():
        unique = [p for p in params.values() if id(p) not in seen and not seen.add(id(p))]
        if unique:
            param_groups.append(
                {"params": unique, "lr": lrs[group], "base_lr": lrs[group], "name": group}
            )
    return torch.optim.AdamW(
        param_groups,
        lr=max(lrs.values()),
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=fused or None,
    )
