"""H-LoRA: task-gated plugins of concatenated low-rank experts with a dense token router.

For an adapted linear ``W0`` and a task family ``T`` the plugin holds ``A_T`` (d_in x r),
``B_T`` (r x d_out) and a router ``R_T`` (d_in x k). The k experts of rank r/k are stored
concatenated, so the whole plugin costs one matmul for A and R together and one for B:

    w = softmax(x R)                                   # [..., k], dense, per token
    y = x W0 + B((scale * dropout(x A)) * repeat_interleave(w, r/k))

with ``scale = alpha / r * k``. The repeat_interleave is a broadcast over a ``[k, r/k]`` view
(the same product without materializing the expanded router). With k = 1 this is exactly
LoRA: the softmax of one logit is 1. Only the active family's plugin runs, so gradients reach
only it.

Which plugin runs is decided by a *route* (:func:`route`): a context variable set around one
forward, not state of the modules, so that nothing the forward leaves behind decides what a
later pass computes. Gradient checkpointing recomputes each layer's forward inside backward,
after the forward's route is gone; :func:`checkpoint_context` (the ``context_fn`` of
``torch.utils.checkpoint``) captures the route when a checkpointed layer runs forward and
re-enters exactly that route for its recomputation. Without a route, each layer falls back to
its ``active_plugin`` attribute (:func:`set_active_plugin`, for scripts that hold one plugin).

Why not a peft tuner: peft's LoRA layer keeps one ``lora_A``/``lora_B`` pair per adapter and has
no slot for a per-adapter router; adding one means a custom ``LoraVariant`` wired through
peft-private dispatch (``resolve_lora_variant``), plus peft's own key naming and adapter
bookkeeping, for a forward that is six lines. A small module keeps the official HealthGPT
parameter names (``lora_A``, ``lora_B``, ``lora_route`` as ``nn.Linear``) so their checkpoints map
one to one, and the tests check it against peft's LoRA numerically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HLoRAConfig:
    """One plugin's shape: total rank ``r``, ``alpha``, ``num_experts`` (k) and dropout."""

    r: int
    alpha: float
    num_experts: int
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r <= 0 or self.num_experts <= 0 or self.r % self.num_experts:
            raise ValueError(f"rank {self.r} must be a positive multiple of k={self.num_experts}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r * self.num_experts


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()
# The family whose plugin every H-LoRA layer runs (None: base only); UNSET: no route is set.
_ROUTE: ContextVar[str | None | _Unset] = ContextVar("hlora_route", default=UNSET)


@contextmanager
def route(family: str | None) -> Iterator[None]:
    """Run ``family``'s plugin (None: the bare base) in every H-LoRA layer inside the block.

    A context variable, so it follows the code that runs, not the modules: it never outlives
    the block, and is per thread (the autograd engine's device threads see only the routes
    that :func:`checkpoint_context` re-enters for recomputation)."""
    token = _ROUTE.set(family)
    try:
        yield
    finally:
        _ROUTE.reset(token)


def current_route() -> str | None | _Unset:
    """The family of the innermost :func:`route` block, or ``UNSET`` outside of any."""
    return _ROUTE.get()


def checkpoint_context() -> tuple[AbstractContextManager, AbstractContextManager]:
    """``context_fn`` for ``torch.utils.checkpoint.checkpoint`` (non-reentrant).

    Called when a checkpointed layer runs its forward: the returned recompute context re-enters
    the route that is active *now*, so the recomputation in backward uses exactly the plugins
    of the forward, whatever route (if any) is active when backward runs."""
    captured = _ROUTE.get()
    recompute = nullcontext() if captured is UNSET else route(captured)
    return nullcontext(), recompute


def _router_dtype(dtype: torch.dtype) -> torch.dtype:
    """The softmax runs in fp32 for half-precision inputs."""
    return torch.promote_types(dtype, torch.float32)


class _HLoRAFunction(torch.autograd.Function):
    """The plugin's forward and a hand-written backward, in a token-minor layout.

    A and R run as one matmul producing ``[r + k, N]`` (N tokens), so the experts' inputs and
    the router logits are contiguous row blocks: the softmax over k (dim 0) and the gating
    broadcast are cheap there, while a softmax over a last dim of size 4 is not. The backward
    writes the gradient of that block in place and needs one matmul each for the input, the
    A|R and the B gradients. Net: k experts cost LoRA's three matmuls plus a matmul of width
    k and a few elementwise passes over ``[r, N]`` (see benchmarks/bench_hlora.py).
    """

    @staticmethod
    def forward(ctx, x, weight_a, weight_route, weight_b, scale, dropout_p, training):
        r, k = weight_a.shape[0], weight_route.shape[0]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w_ar = torch.cat((weight_a, weight_route)).to(x.dtype)
        w_b = weight_b.to(x.dtype)
        hz_t = w_ar @ x2.t()  # [r + k, N]: expert inputs over router logits
        probs_t = torch.softmax(hz_t[r:], dim=0, dtype=_router_dtype(x.dtype))  # [k, N]
        h_t, keep = hz_t[:r], None
        if training and dropout_p > 0:
            keep = torch.empty_like(h_t).bernoulli_(1 - dropout_p)
            h_t = h_t * keep
            scale = scale / (1 - dropout_p)
        gate_t = (probs_t * scale).to(x.dtype).unsqueeze(1)  # [k, 1, N]
        u_t = (h_t.view(k, r // k, -1) * gate_t).view(r, -1)
        ctx.save_for_backward(x2, w_ar, w_b, h_t, probs_t, keep)
        ctx.scale, ctx.r, ctx.k, ctx.shape = scale, r, k, shape
        ctx.dtypes = (weight_a.dtype, weight_route.dtype, weight_b.dtype)
        return (u_t.t() @ w_b.t()).view(*shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad_y):
        x2, w_ar, w_b, h_t, probs_t, keep = ctx.saved_tensors
        r, k, scale = ctx.r, ctx.k, ctx.scale
        need_x, need_a, need_r, need_b = ctx.needs_input_grad[:4]
        gy = grad_y.reshape(-1, grad_y.shape[-1]).to(x2.dtype)
        gate_t = (probs_t * scale).to(x2.dtype).unsqueeze(1)
        h3 = h_t.view(k, r // k, -1)
        grad_b = None
        if need_b:
            grad_b = (gy.t() @ (h3 * gate_t).view(r, -1).t()).to(ctx.dtypes[2])
        grad_x = grad_a = grad_r = None
        if need_x or need_a or need_r:
            gu3 = (w_b.t() @ gy.t()).view(k, r // k, -1)  # d loss / d u, [k, r/k, N]
            grad_probs = (gu3 * h3).sum(1, dtype=probs_t.dtype) * scale  # [k, N]
            ghz_t = torch.empty((r + k, gy.shape[0]), dtype=x2.dtype, device=x2.device)
            torch.mul(gu3, gate_t, out=ghz_t[:r].view(k, r // k, -1))
            if keep is not None:
                ghz_t[:r].mul_(keep)
            # softmax backward: p * (g - <g, p>)
            ghz_t[r:] = probs_t * (grad_probs - (grad_probs * probs_t).sum(0, keepdim=True))
            if need_x:
                grad_x = (ghz_t.t() @ w_ar).view(ctx.shape)
            if need_a or need_r:
                grad_ar = ghz_t @ x2
                grad_a, grad_r = grad_ar[:r].to(ctx.dtypes[0]), grad_ar[r:].to(ctx.dtypes[1])
        return grad_x, grad_a, grad_r, grad_b, None, None, None


class HLoRAPlugin(nn.Module):
    """The low-rank update of one task family for one linear layer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: HLoRAConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"bias": False, "device": device, "dtype": dtype}
        self.config = config
        self.lora_A = nn.Linear(in_features, config.r, **kw)
        self.lora_B = nn.Linear(config.r, out_features, **kw)
        self.lora_route = nn.Linear(in_features, config.num_experts, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # B = 0 makes a fresh plugin an exact no-op on the base model.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_route.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def router_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Dense softmax gate over the k experts, per token (at least fp32)."""
        logits = F.linear(x, self.lora_route.weight)
        return torch.softmax(logits, dim=-1, dtype=_router_dtype(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # What autocast would do to a linear: compute in its dtype. The function then runs
            # with autocast off, so forward and the hand-written backward agree on one dtype.
            x = x.to(torch.get_autocast_dtype(device_type))
            with torch.autocast(device_type, enabled=False):
                return self._plugin(x)
        return self._plugin(x)

    def _plugin(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return _HLoRAFunction.apply(
            x,
            self.lora_A.weight,
            self.lora_route.weight,
            self.lora_B.weight,
            cfg.scale,
            cfg.dropout,
            self.training,
        )

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's formula: plain autograd, explicit repeat_interleave, no dropout."""
        cfg = self.config
        w = self.router_weights(x).to(x.dtype)
        w = w.repeat_interleave(cfg.r // cfg.num_experts, dim=-1)
        return self.lora_B(cfg.scale * self.lora_A(x) * w)


class HLoRALinear(nn.Module):
    """A frozen linear layer plus one H-LoRA plugin per task family; one is active at a time."""

    def __init__(self, base_layer: nn.Linear, plugins: Mapping[str, HLoRAConfig]) -> None:
        super().__init__()
        self.base_layer = base_layer
        w = base_layer.weight
        self.plugins = nn.ModuleDict(
            {
                name: HLoRAPlugin(
                    base_layer.in_features,
                    base_layer.out_features,
                    cfg,
                    device=w.device,
                    dtype=w.dtype,
                )
                for name, cfg in plugins.items()
            }
        )
        self.active_plugin: str | None = None

    # Some model code reads these attributes off its linear layers.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def current_plugin(self) -> str | None:
        """The plugin a forward runs now: the active route's, else this layer's attribute."""
        family = _ROUTE.get()
        return self.active_plugin if family is UNSET else family

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        family = self.current_plugin()
        if family is None:
            return out
        try:
            plugin = self.plugins[family]
        except KeyError:
            raise KeyError(f"no H-LoRA plugin {family!r}; have {sorted(self.plugins)}") from None
        return out + plugin(x)


def find_target_linears(lm: nn.Module) -> list[str]:
    """Every ``nn.Linear`` of a causal LM except its output head, by qualified name."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    return [
        name
        for name, module in lm.named_modules()
        if isinstance(module, nn.Linear) and module is not head and name
    ]


def inject_hlora(
    lm: nn.Module, plugins: Mapping[str, HLoRAConfig], targets: list[str] | None = None
) -> list[str]:
    """Swap the target linears of ``lm`` for :class:`HLoRALinear` in place; return their names."""
    targets = find_target_linears(lm) if targets is None else targets
    if not targets:
        raise ValueError("no linear layers to adapt")
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = lm.get_submodule(parent_name) if parent_name else lm
        base = getattr(parent, child)
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{name} is {type(base).__name__}, not nn.Linear")
        base.requires_grad_(False)
        setattr(parent, child, HLoRALinear(base, plugins))
    return targets


def hlora_layers(module: nn.Module) -> Iterator[tuple[str, HLoRALinear]]:
    for name, child in module.named_modules():
        if isinstance(child, HLoRALinear):
            yield name, child


def set_active_plugin(module: nn.Module, family: str | None) -> None:
    """Route every H-LoRA layer under ``module`` through ``family``'s plugin (None: base only)."""
    layers = list(hlora_layers(module))
    missing = [n for n, layer in layers if family is not None and family not in layer.plugins]
    if missing:
        raise KeyError(f"no plugin {family!r} in {len(missing)} layers, e.g. {missing[0]}")
    for _, layer in layers:
        layer.active_plugin = family


def get_active_plugin(module: nn.Module) -> str | None:
    active = {layer.active_plugin for _, layer in hlora_layers(module)}
    if len(active) > 1:
        raise RuntimeError(
            f"H-LoRA layers disagree on the active plugin: {sorted(map(str, active))}"
        )
    return active.pop() if active else None


@contextmanager
def active_plugin(module: nn.Module, family: str | None) -> Iterator[None]:
    """Activate ``family``'s plugin inside the block and restore the previous one after."""
    previous = get_active_plugin(module)
    set_active_plugin(module, family)
    try:
        yield
    finally:
        set_active_plugin(module, previous)


def plugin_parameters(module: nn.Module, family: str | None = None) -> Iterator[nn.Parameter]:
    """Parameters of all plugins, or of one family's plugins."""
    for _, layer in hlora_layers(module):
        for name, plugin in layer.plugins.items():
            if family is None or name == family:
                yield from plugin.parameters()
