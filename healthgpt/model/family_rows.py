"""Per-family vocabulary rows: input embeddings and LM head that differ between task families.

The released HealthGPT runs two models on one base: the comprehension model
(``com_infer.py``) never loads ``fusion_layer_weights.bin`` and keeps the base rows (plus the
mean-initialized image-token rows), while the generation model (``gen_infer.py``) loads that
file over its embeddings and LM head. Both families live in one :class:`HealthGPT` here, so
the embedding and the head are wrapped: the base table is shared, and a family keeps only the
rows where its table differs (all of them, i.e. a second table, only when the file differs
everywhere). Which family's rows apply follows the same route as the H-LoRA plugins
(:func:`healthgpt.model.hlora.route`), so switching families per sample needs no copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from healthgpt.model.hlora import UNSET, current_route


class _Rows(nn.Module):
    """One family's replacement rows: ``rows[i]`` replaces base row ``index[i]``."""

    def __init__(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.long(), persistent=False)
        self.rows = nn.Parameter(rows, requires_grad=False)


class _FamilyRowsMixin(nn.Module):
    """The family selection shared by the embedding and the head."""

    def __init__(self) -> None:
        super().__init__()
        self.families = nn.ModuleDict()
        self.active_plugin: str | None = None  # used only outside any route

    def _current(self) -> _Rows | None:
        family = current_route()
        family = self.active_plugin if family is UNSET else family
        return self.families[family] if family in self.families else None  # noqa: SIM401

    def set_rows(self, family: str, index: torch.Tensor, rows: torch.Tensor) -> None:
        """Give ``family`` its own rows at ``index`` (replacing any it had)."""
        self.families[family] = _Rows(index.to(rows.device), rows)


class FamilyEmbedding(_FamilyRowsMixin):
    """An ``nn.Embedding`` whose rows can differ per task family."""

    def __init__(self, base: nn.Embedding) -> None:
        super().__init__()
        self.base = base

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        rows = self._current()
        if rows is None:
            return out
        slot = torch.full(
            (self.base.num_embeddings,), -1, dtype=torch.long, device=input_ids.device
        )
        slot[rows.index] = torch.arange(len(rows.index), device=input_ids.device)
        where = slot[input_ids]
        replaced = F.embedding(where.clamp(min=0), rows.rows).to(out.dtype)
        return torch.where((where >= 0).unsqueeze(-1), replaced, out)


class FamilyHead(_FamilyRowsMixin):
    """A bias-free LM head (``nn.Linear``) whose output rows can differ per task family."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        if base.bias is not None:
            raise ValueError("an LM head with a bias is not supported")
        self.base = base

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> None:
        return None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.base(hidden)
        rows = self._current()
        if rows is None:
            return logits
        own = F.linear(hidden, rows.rows).to(logits.dtype)
        return logits.index_copy(-1, rows.index, own)


def unusable_weights(tensor: torch.Tensor) -> str | None:
    """Why ``tensor`` cannot be loaded as model weights (None when it can): it must be
    floating point, hold data (not a meta tensor) and be finite; a file failing any of these
    would otherwise load and break later (meta), or quietly cast integers / spread NaN."""
    if tensor.is_meta:
        return "is a meta tensor (a shape without data)"
    if not tensor.is_floating_point():
        return f"has dtype {tensor.dtype}, not floating point"
    if not bool(torch.isfinite(tensor).all()):
        return "holds NaN or infinite values"
    return None


def set_family_rows(lm: nn.Module, family: str, embed: torch.Tensor, head: torch.Tensor) -> int:
    """Make ``embed`` / ``head`` (full tables, the base's shapes) ``family``'s rows of ``lm``.

    Only the rows that differ from the base are kept. The embedding and head of ``lm`` are
    wrapped the first time. Returns how many rows (embedding + head) the family keeps.
    A table `unusable_weights` refuses raises ValueError, before anything is changed."""
    for what, table in (("embedding", embed), ("head", head)):
        reason = unusable_weights(table)
        if reason:
            raise ValueError(f"{family} {what} table {reason}")
    kept = 0
    for table, getter, setter, wrapper in (
        (embed, lm.get_input_embeddings, lm.set_input_embeddings, FamilyEmbedding),
        (head, lm.get_output_embeddings, lm.set_output_embeddings, FamilyHead),
    ):
        module = getter()
        if not isinstance(module, wrapper):
            module = wrapper(module)
            setter(module)
        base = module.weight
        table = table.to(device=base.device, dtype=base.dtype)
        index = (table != base).any(dim=1).nonzero().flatten()
        module.set_rows(family, index, table[index].clone())
        kept += len(index)
    return kept


def family_row_modules(lm: nn.Module) -> list[_FamilyRowsMixin]:
    """The wrapped embedding and head of ``lm`` (none if no family has rows of its own)."""
    return [
        m
        for m in (lm.get_input_embeddings(), lm.get_output_embeddings())
        if isinstance(m, _FamilyRowsMixin)
    ]
