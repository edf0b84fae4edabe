"""Training-step time of H-LoRA and of a naive MoE-LoRA, as ratios to plain LoRA of the same rank.

Every variant is a plugin of the same H-LoRA-wrapped model (one shared frozen base), so the
runs differ only in the adapter. Timing follows `benchmarks.timing`: variants interleaved
A B C A B C, at least 5 repeats each, medians compared with their spread, two clocks (wall,
and the CPU time of the single compute thread, which other processes barely disturb), and the
machine load printed with the JSON result.

Two models:
- ``main``: a Llama-like model, hidden 512, 4 layers, batch 4 x seq 256, rank 64 (M3's
  comprehension rank), plus peft's LoRA layer for reference (dropout on the input, as peft
  does it). At hidden 512 the adapter is a quarter of the layer's matmul work, so any
  overhead shows up about 4x larger than in a real model.
- ``m3_layer``: one decoder layer at Phi-3-mini's shape (hidden 3072, MLP 8192), 256 tokens,
  rank 64: the proportions of HealthGPT-M3.

The paper (HealthGPT, Table 6) reports H-LoRA at 0.99-1.01x LoRA and MoE-LoRA at 1.22-5.81x;
the goal here is H-LoRA <= 1.03x LoRA for k up to 32.

    python -m benchmarks.bench_hlora            # markdown tables + benchmarks/results/hlora.json
    python -m benchmarks.bench_hlora --quick    # small shapes, for a smoke run
    python -m benchmarks.bench_hlora --repeats 36 --hlora-only   # enough rounds for ~2%
"""

from __future__ import annotations

import argparse
import platform
import warnings
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks import write_result
from benchmarks.timing import (
    MIN_REPEATS,
    interleave_both,
    machine_load,
    print_result,
    ratio,
    steady_allocator,
    summary,
)
from healthgpt.model.hlora import HLoRAConfig, hlora_layers, inject_hlora, set_active_plugin

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class BenchConfig:
    hidden: int = 512
    intermediate: int = 1536
    layers: int = 4
    heads: int = 8
    vocab: int = 8192
    seq: int = 256
    batch: int = 4
    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.05
    experts: tuple[int, ...] = (2, 4, 8, 32)
    moe: bool = True
    peft: bool = True
    warmup: int = 1
    repeats: int = MIN_REPEATS


REPEATS = 9
"""Timed rounds by default: a step's CPU time spreads 13-21% on the 2-core development
machine even alone, and the goal is a few percent."""
MAIN = BenchConfig()
M3_LAYER = BenchConfig(
    hidden=3072,
    intermediate=8192,
    layers=1,
    heads=32,
    vocab=512,
    batch=1,
    moe=False,
    peft=False,
)


class LoRAAdapter(nn.Module):
    """Plain LoRA, written like the H-LoRA plugin: B(scale * dropout(A x))."""

    def __init__(self, d_in: int, d_out: int, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.lora_A = nn.Linear(d_in, r, bias=False)
        self.lora_B = nn.Linear(r, d_out, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.linear(x, self.lora_A.weight)) * self.scale
        return F.linear(h, self.lora_B.weight)


class MoELoRAAdapter(nn.Module):
    """Naive mixture of k LoRA experts of rank r/k: k separate A/B pairs, outputs summed."""

    def __init__(self, d_in: int, d_out: int, r: int, alpha: float, k: int, dropout: float):
        super().__init__()
        self.experts_A = nn.ModuleList(nn.Linear(d_in, r // k, bias=False) for _ in range(k))
        self.experts_B = nn.ModuleList(nn.Linear(r // k, d_out, bias=False) for _ in range(k))
        self.route = nn.Linear(d_in, k, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = alpha / r * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.route(x), dim=-1)
        out = 0
        for i, (a, b) in enumerate(zip(self.experts_A, self.experts_B, strict=True)):
            out = out + w[..., i : i + 1] * b(self.dropout(a(x)) * self.scale)
        return out


def _llama(cfg: BenchConfig) -> LlamaForCausalLM:
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab,
            hidden_size=cfg.hidden,
            intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.heads,
            max_position_embeddings=cfg.seq,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    )
    return lm.requires_grad_(False).train()


Variant = tuple[str, int]  # (kind, k)


def _optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    with torch.no_grad():  # B = 0 would make the router's gradient vanish; time the general case
        for p in params:
            p.normal_(0, 0.02)
    return torch.optim.AdamW(params, lr=1e-4)


def build(cfg: BenchConfig) -> tuple[dict[Variant, tuple[nn.Module, str | None, object]], list]:
    """All variants: (model, plugin name, optimizer); our variants share one model."""
    ours: list[Variant] = [("lora", 1)] + [("hlora", k) for k in cfg.experts]
    if cfg.moe:
        ours += [("moe", k) for k in cfg.experts]
    lm = _llama(cfg)
    plugin = {f"{kind}{k}": HLoRAConfig(cfg.rank, cfg.alpha, k, cfg.dropout) for kind, k in ours}
    inject_hlora(lm, plugin)
    for _, layer in hlora_layers(lm):
        d_in, d_out = layer.in_features, layer.out_features
        for kind, k in ours:
            if kind == "lora":
                layer.plugins[f"lora{k}"] = LoRAAdapter(
                    d_in, d_out, cfg.rank, cfg.alpha, cfg.dropout
                )
            elif kind == "moe":
                layer.plugins[f"moe{k}"] = MoELoRAAdapter(
                    d_in, d_out, cfg.rank, cfg.alpha, k, cfg.dropout
                )
    runs = {}
    for kind, k in ours:
        name = f"{kind}{k}"
        params = [p for n, p in lm.named_parameters() if f".plugins.{name}." in n]
        for p in params:
            p.requires_grad_(True)
        runs[(kind, k)] = (lm, name, _optimizer(params))
    variants = list(ours)
    if cfg.peft:
        with warnings.catch_warnings():  # a transformers 5 deprecation raised inside peft
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            peft_lm = get_peft_model(
                _llama(cfg),
                LoraConfig(
                    r=cfg.rank,
                    lora_alpha=cfg.alpha,
                    lora_dropout=cfg.dropout,
                    target_modules=list(LLAMA_LINEARS),
                ),
            )
        params = [p for p in peft_lm.parameters() if p.requires_grad]
        runs[("peft", 1)] = (peft_lm, None, _optimizer(params))
        variants.insert(1, ("peft", 1))
    return runs, variants


def step(run: tuple[nn.Module, str | None, object], ids: torch.Tensor) -> None:
    """One forward + backward + optimizer step."""
    lm, plugin, opt = run
    if plugin is not None:
        set_active_plugin(lm, plugin)
    loss = lm(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


NAMES = {"lora": "LoRA", "peft": "peft LoRA", "hlora": "H-LoRA", "moe": "MoE-LoRA"}


def measure(cfg: BenchConfig) -> list[dict]:
    runs, variants = build(cfg)
    ids = torch.randint(
        3, cfg.vocab, (cfg.batch, cfg.seq), generator=torch.Generator().manual_seed(0)
    )
    names = {f"{kind}{k}": (kind, k) for kind, k in variants}
    times = interleave_both(
        {name: (lambda v=v: step(runs[v], ids)) for name, v in names.items()},
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        what=f"hlora benchmark, hidden {cfg.hidden}",
    )
    base = times["lora1"]
    cpu_times = {name: samples["cpu"] for name, samples in times.items()}
    rows = []
    for name, (kind, k) in names.items():
        wall, cpu = summary(times[name]["wall"]), summary(times[name]["cpu"])
        paired = ratio(cpu_times, name, "lora1")
        rows.append(
            {
                "variant": NAMES[kind],
                "k": k,
                "repeats": wall["n"],
                "wall_median_s": round(wall["median"], 4),
                "wall_spread": round(wall["spread"], 3),
                "wall_ratio": round(wall["median"] / summary(base["wall"])["median"], 3),
                "cpu_median_s": round(cpu["median"], 4),
                "cpu_spread": round(cpu["spread"], 3),
                "cpu_ratio": round(cpu["median"] / summary(base["cpu"])["median"], 3),
                # Each round's step over the same round's LoRA step, then the median: what
                # drift between rounds cannot move.
                "cpu_paired_ratio": round(paired["round_ratio_median"], 3),
                "cpu_paired_ratio_iqr": [round(x, 3) for x in paired["round_ratio_iqr"]],
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | k | step, wall (s) | spread | x LoRA (wall) | x LoRA (CPU time) | spread "
        "| x LoRA, paired rounds (CPU) | its IQR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["cpu_paired_ratio_iqr"]
        lines.append(
            f"| {r['variant']} | {r['k']} | {r['wall_median_s']:.3f} | {r['wall_spread']:.1%} "
            f"| {r['wall_ratio']:.3f} | {r['cpu_ratio']:.3f} | {r['cpu_spread']:.1%} "
            f"| {r['cpu_paired_ratio']:.3f} | {low:.3f}-{high:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-m3-layer", action="store_true", help="skip the M3-shaped layer")
    parser.add_argument(
        "--hlora-only",
        action="store_true",
        help="only LoRA and H-LoRA (no MoE-LoRA, no peft): rounds 4x shorter, for long runs",
    )
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help=f"timed rounds (default {REPEATS})"
    )
    args = parser.parse_args()
    threads = torch.get_num_threads()  # restored after: run_all runs other benchmarks next
    torch.set_num_threads(args.threads)
    steady_allocator()
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> None:
    configs = {"main": MAIN, "m3_layer": M3_LAYER}
    if args.no_m3_layer:
        del configs["m3_layer"]
    configs = {name: replace(cfg, repeats=args.repeats) for name, cfg in configs.items()}
    if args.hlora_only:
        configs = {name: replace(cfg, moe=False, peft=False) for name, cfg in configs.items()}
    if args.quick:
        small = {"hidden": 128, "intermediate": 384, "heads": 4, "seq": 64, "repeats": 2}
        configs = {name: replace(cfg, **small) for name, cfg in configs.items()}
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    load_before = machine_load()
    tables = []
    for name, cfg in configs.items():
        rows = measure(cfg)
        result[name] = {"config": asdict(cfg), "rows": rows}
        title = (
            f"{name}: hidden {cfg.hidden}, {cfg.layers} layer(s), batch {cfg.batch} x seq "
            f"{cfg.seq}, rank {cfg.rank}, dropout {cfg.dropout}, {cfg.repeats} repeats "
            "interleaved, medians"
        )
        tables.append(f"{title}\n\n{markdown(rows)}")
        print(tables[-1] + "\n", flush=True)
    result["markdown"] = "\n\n".join(tables)
    result["load_before"], result["load_after"] = load_before, machine_load()
    path = write_result("hlora", result)
    print_result("hlora", {k: v for k, v in result.items() if k != "markdown"}, load_before)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
