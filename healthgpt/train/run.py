"""One stage, end to end, litgpt style: `run_stage` = setup -> main -> fit -> validate -> save.

Outputs of a stage under `out_dir` (e.g. `data/checkpoints/stage1/`):

    runs/<run key[:16]>/ckpt-<step>/   periodic checkpoints (trainable tensors, optimizer, state)
    runs/<run key[:16]>/final/         model.safetensors (`healthgpt.model.save_trainable`:
                                       plugins, projectors, embeddings; preset in its
                                       metadata), state.json, loss.png
    CURRENT.json                       which run's final the next stage (and evaluation,
                                       `healthgpt.eval.models.resolve_checkpoint`) loads

The run key hashes the resolved config and the inputs (mixture subset, previous stage, VQ
tokenizer), so a rerun with the same key resumes its run and a changed one starts a new run
beside it instead of resuming into a different experiment.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from healthgpt.model import GENERATION
from healthgpt.storage import file_sha256, output_path, write_json
from healthgpt.train import distributed
from healthgpt.train import state as ckpt
from healthgpt.train.config import StageConfig, stage_config
from healthgpt.train.data import (
    LENGTH_GROUP,
    RowIndex,
    ShardStream,
    StreamSpec,
    hash_shards,
    iter_rows,
    make_loader,
    split_files,
)
from healthgpt.train.lengths import LengthReport, screen
from healthgpt.train.loop import Progress, fit, peak_memory_bytes
from healthgpt.train.model_api import TARGET_COLUMNS, ModelBundle, build_bundle
from healthgpt.train.model_card import write_model_card
from healthgpt.train.report import loss_curve_png, loss_summary
from healthgpt.train.schedule import accumulation, family_order, steps_per_family
from healthgpt.train.stages import build_optimizer, freeze_for_stage
from healthgpt.train.validation import validate
from healthgpt.train.vq_assets import vq_hash
from healthgpt.train.vq_codes import load_codes

FINAL = "final"
CURRENT = "CURRENT.json"
MODEL_FILE = "model.safetensors"
# What a run computes beyond its config, part of the run key: bump it when the objective, the
# data stream or the dropout seeding changes, so no run resumes into another recipe.
# 2: loss over the global batch's answer tokens, endless-epoch stream, per-micro-batch dropout
# seeds, per-family warmup, samples that do not fit max_length dropped before training.
# 3: length-grouped micro-batches (`data.length_grouped`).
RECIPE = "3"


@dataclass
class RunSpec:
    """Where a stage reads and writes, and its config overrides (all a launcher must give)."""

    stage: str
    mixture_dir: Path
    out_dir: Path
    init_dir: Path | None = None
    vq_dir: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    def subset_dir(self, config: StageConfig) -> Path:
        return output_path(self.mixture_dir) / config.subset


@dataclass
class Reporter:
    """Where rank 0 sends log lines and the final metrics (stdout, or Dagster Pipes)."""

    log: Callable[[str], None] = print
    final: Callable[[dict[str, Any]], None] = lambda metrics: None


def subset_fingerprint(subset_dir: Path) -> str:
    """Content identity of a subset's training shards: names, sizes and a manifest if any."""
    digest = hashlib.sha256()
    manifest = subset_dir / "_manifest.json"
    if manifest.is_file():
        digest.update(manifest.read_bytes())
    hash_shards(digest, split_files(subset_dir, "train"))
    return digest.hexdigest()


def current_final(out_dir: Path) -> Path:
    """The final directory the last successful run of a stage wrote."""
    pointer = Path(out_dir) / CURRENT
    if not pointer.is_file():
        raise FileNotFoundError(f"{out_dir} has no {CURRENT}: that stage has not finished a run")
    return Path(json.loads(pointer.read_text())["final"])


def run_stage(spec: RunSpec, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train one stage (resuming if a checkpoint of the same run exists); return its metrics."""
    reporter = reporter or Reporter()
    d = distributed.setup(spec.device)
    threads = torch.get_num_threads()  # a caller in this process gets its own back
    try:
        return _main(spec, reporter, d)
    finally:
        torch.set_num_threads(threads)
        distributed.teardown()


def _main(spec: RunSpec, reporter: Reporter, d: distributed.Dist) -> dict[str, Any]:
    config = stage_config(spec.stage, spec.overrides)
    if config.threads and d.device.type == "cpu":
        torch.set_num_threads(config.threads)
    log = reporter.log if d.is_main else (lambda message: None)
    subset_dir = spec.subset_dir(config)
    init_hash = file_sha256(Path(spec.init_dir) / MODEL_FILE) if spec.init_dir else ""
    inputs = {
        "recipe": RECIPE,
        "subset": subset_fingerprint(subset_dir),
        "init": init_hash,
        "vq": vq_hash(spec.vq_dir),
        "world": str(d.world),
    }
    run_key = config.run_key(**inputs)
    run_dir = Path(spec.out_dir) / "runs" / run_key[:16]
    final_dir = run_dir / FINAL

    if (final_dir / ckpt.STATE_NAME).is_file():
        finished = ckpt.load_checkpoint(final_dir, run_key)
        log(f"{spec.stage}: run {run_key[:16]} already finished; reusing {final_dir}")
        metrics = final_metrics(finished)
        if d.is_main:
            _point_current(spec.out_dir, final_dir, run_key)
            reporter.final(metrics)
        return metrics

    bundle = _build_model(spec, config, log, d)
    trainable = freeze_for_stage(bundle.model, bundle.parameter_groups(), config)
    _fp32_master_weights(trainable)
    if config.gradient_checkpointing:
        bundle.model.enable_gradient_checkpointing()
    optimizer = build_optimizer(trainable, config, fused=d.device.type == "cuda")
    trainable_names = sorted({n for group in trainable.values() for n in group})
    precision = precision_summary(bundle, config)
    log(f"{spec.stage}: precision {precision}")

    train_files = split_files(subset_dir, "train")
    indexes = {family: RowIndex.build(train_files, family) for family in config.families}
    if len(indexes.get(GENERATION, ())):  # the generation targets' VQ codes, before the loaders
        _target_codes(spec, subset_dir, bundle, train_files, log)
    lengths: dict[str, LengthReport] = {}
    token_lengths: dict[str, Any] = {}
    for family, index in list(indexes.items()):
        keep, lengths[family], token_lengths[family] = screen(
            index,
            bundle.encoder().fit,
            config.max_length,
            d.rank,
            d.world,
            combine=lambda table: distributed.sum_array(table, d),
        )
        indexes[family] = index.select(keep)
        log(f"{spec.stage}: {family}: {lengths[family].line()}")
    rows = {family: len(index) for family, index in indexes.items()}
    steps = steps_per_family(config, rows)
    if not steps:
        raise ValueError(f"{subset_dir}: no trainable rows for families {list(config.families)}")
    order = family_order(steps)
    accum = {family: accumulation(config, family, d.world) for family in steps}

    progress = Progress(consumed=dict.fromkeys(steps, 0))
    latest = ckpt.list_checkpoints(run_dir)
    if latest:
        resumed = ckpt.load_checkpoint(latest[-1], run_key)
        bundle.load_group_state(resumed.tensors("trainable"))
        ckpt.restore_optimizer(optimizer, resumed.tensors("optimizer"), resumed.state["optimizer"])
        progress = Progress.from_json(resumed.state["progress"])
        ckpt.set_rng_state(resumed.state["rng"][d.rank])
        log(f"{spec.stage}: resuming run {run_key[:16]} from step {progress.step} ({latest[-1]})")
    else:
        log(f"{spec.stage}: new run {run_key[:16]}, {len(order)} steps {steps}, rows {rows}")

    model: torch.nn.Module = bundle.model
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            bundle.model,
            device_ids=[d.local_rank] if d.device.type == "cuda" else None,
            find_unused_parameters=len(steps) > 1,
        )
    batches = {
        family: iter(
            make_loader(
                ShardStream(
                    indexes[family],
                    StreamSpec(
                        config.micro_batch,
                        config.seed,
                        d.rank,
                        d.world,
                        length_group=LENGTH_GROUP,
                    ),
                    bundle.encoder(),
                    bundle.collator(),
                    columns=bundle.columns,
                    start=progress.consumed.get(family, 0),
                    lengths=token_lengths[family],
                ),
                config.num_workers,
                pin_memory=d.device.type == "cuda",
            )
        )
        for family in steps
    }

    def save(p: Progress) -> None:
        states = _gather_rng(d)
        if d.is_main:
            named = dict(bundle.model.named_parameters())
            opt_tensors, opt_groups = ckpt.optimizer_tensors(optimizer)
            path = ckpt.save_checkpoint(
                ckpt.checkpoint_dir(run_dir, p.step),
                {"trainable": {n: named[n] for n in trainable_names}, "optimizer": opt_tensors},
                {
                    "run_key": run_key,
                    "step": p.step,
                    "config": config.to_dict(),
                    "inputs": inputs,
                    "progress": p.to_json(),
                    "rng": states,
                    "optimizer": opt_groups,
                },
            )
            ckpt.prune_checkpoints(run_dir, config.keep_checkpoints)
            log(f"checkpoint step {p.step} -> {path}")
        distributed.barrier(d)

    started = time.perf_counter()
    progress = fit(
        config=config,
        bundle=bundle,
        model=model,
        optimizer=optimizer,
        batches=batches,
        order=order,
        accumulation=accum,
        progress=progress,
        d=d,
        log=log,
        save=save,
    )
    wall = time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if d.is_main:
        data = {
            "lengths": {f: r.to_json() for f, r in lengths.items()},
            "precision": precision,
            "padding_fraction": progress.padding_fraction(),
            "padding_fraction_per_family": {
                family: progress.padding_fraction(family) for family in progress.positions
            },
        }
        metrics = _finish(spec, config, bundle, progress, run_key, inputs, final_dir, d, wall, data)
        reporter.final(metrics)
    distributed.barrier(d)
    return metrics


def _target_codes(
    spec: RunSpec,
    subset_dir: Path,
    bundle: ModelBundle,
    train_files: list[Path],
    log: Callable[[str], None],
) -> None:
    """The generation targets' code text: read from the `vq_codes` store when it holds this
    subset, tokenizer and preset preprocessing (no image encoded), else encoded here."""
    mixture = Path(str(spec.mixture_dir))
    codes = load_codes(mixture, subset_dir, vq_hash(spec.vq_dir), bundle.vq_preprocess)
    if codes is not None:
        bundle.set_target_codes(codes)
        log(f"{spec.stage}: VQ codes of {len(codes)} generation samples read from vq_codes")
        return
    log(
        f"{spec.stage}: no vq_codes for this subset, tokenizer and {bundle.vq_preprocess} "
        f"preprocessing (materialize the vq_codes asset with model_preset {bundle.preset} to "
        "compute them once); encoding the generation targets now"
    )
    added = bundle.add_target_codes(iter_rows(train_files, TARGET_COLUMNS, GENERATION))
    log(f"{spec.stage}: {added} generation target images encoded")


def _build_model(
    spec: RunSpec, config: StageConfig, log: Callable[[str], None], d: distributed.Dist
) -> ModelBundle:
    """Base model, plus the previous stage's trained parts when this stage has an init.

    The precision policy is the same on every device: with `precision: bf16` the frozen base
    is bf16, the stage's trainable tensors become fp32 master weights after freezing, and the
    model runs every pass (training, validation, generation) under bf16 autocast; on a CPU this
    is slow, but it is the GPU's policy rehearsed. `precision: fp32` (the cpu preset) is fp32
    throughout.
    """
    bf16 = config.precision == "bf16"
    bundle = build_bundle(
        config.model_preset,
        config.max_length,
        config.dropout,
        config.seed,
        spec.vq_dir,
        device=d.device,
        dtype=torch.bfloat16 if bf16 else torch.float32,
    )
    if spec.init_dir:
        init = ckpt.load_checkpoint(Path(spec.init_dir))
        expected = init.state.get("base_fingerprint")
        if expected and expected != bundle.base_fingerprint():
            raise ckpt.CheckpointError(
                f"{spec.init_dir} was trained on another base model (preset or seed differ)"
            )
        bundle.load_model_file(Path(spec.init_dir) / MODEL_FILE)
        log(f"{spec.stage}: initialized from {spec.init_dir}")
    return bundle


def precision_summary(bundle: ModelBundle, config: StageConfig) -> dict[str, Any]:
    """The dtypes a stage really runs with (stage metadata; what the rehearsal checks)."""
    model = bundle.model

    def names(params) -> list[str]:
        return sorted({str(p.dtype).removeprefix("torch.") for p in params})

    autocast = model.autocast_dtype
    return {
        "precision": config.precision,
        "frozen_lm": names(p for p in model.lm.parameters() if not p.requires_grad),
        "trainable": names(p for p in model.parameters() if p.requires_grad),
        "autocast": str(autocast).removeprefix("torch.") if autocast else None,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


def _fp32_master_weights(trainable: dict[str, dict[str, torch.nn.Parameter]]) -> None:
    """Trainable tensors in fp32 (a no-op when the model already is): AdamW on bf16 weights
    loses small updates. The model casts at its boundaries (H-LoRA, projectors) and autocast
    does the rest."""
    for params in trainable.values():
        for param in params.values():
            if param.dtype != torch.float32:
                param.data = param.data.float()


def _gather_rng(d: distributed.Dist) -> list[dict[str, Any]]:
    state = ckpt.rng_state()
    if not d.enabled:
        return [state]
    gathered: list[Any] = [None] * d.world
    dist.all_gather_object(gathered, state)
    return gathered


def _finish(
    spec: RunSpec,
    config: StageConfig,
    bundle: ModelBundle,
    progress: Progress,
    run_key: str,
    inputs: dict[str, str],
    final_dir: Path,
    d: distributed.Dist,
    wall: float,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Validate, write the final directory atomically, point CURRENT at it; return metrics."""
    evaluation = validate(bundle, config, spec.subset_dir(config), d.device)
    seconds = max(progress.train_seconds, 1e-9)
    metrics: dict[str, Any] = {
        "stage": spec.stage,
        "run_key": run_key,
        "steps": progress.step,
        "samples": progress.samples,
        "tokens": progress.tokens,
        "answer_tokens": progress.answer_tokens,
        "train_seconds": round(progress.train_seconds, 2),
        "wall_seconds_this_process": round(wall, 2),
        "tokens_per_second": progress.tokens / seconds,
        "answer_tokens_per_second": progress.answer_tokens / seconds,
        "samples_per_second": progress.samples / seconds,
        "peak_memory_bytes": peak_memory_bytes(d.device),
        "world_size": d.world,
        "device": str(d.device),
        "loss": loss_summary(progress.history),
        "images_encoded": bundle.images_encoded,
        "config": config.to_dict(),
        **data,
        **evaluation,
    }
    metrics["final_dir"] = str(final_dir)
    state = {
        "run_key": run_key,
        "step": progress.step,
        "config": config.to_dict(),
        "inputs": inputs,
        "base_fingerprint": bundle.base_fingerprint(),
        "metrics": metrics,
        "progress": progress.to_json(),
    }
    png = loss_curve_png(progress.history, f"{spec.stage} ({config.preset})")
    saved = ckpt.save_checkpoint(
        final_dir,
        {},
        state,
        extra_files={"loss.png": png},
        writers={MODEL_FILE: lambda path: bundle.save_model(path, {"run_key": run_key})},
    )
    write_model_card(final_dir, state, spec.subset_dir(config), spec.init_dir)
    _point_current(spec.out_dir, final_dir, run_key)
    ckpt.prune_checkpoints(final_dir.parent, keep=0)  # the final supersedes them
    return final_metrics(ckpt.load_checkpoint(saved, run_key))


def final_metrics(final: ckpt.Checkpoint) -> dict[str, Any]:
    """A final checkpoint's metrics with the hashes of the files it holds."""
    return {**final.state["metrics"], "files": final.state["files"]}


def _point_current(out_dir: Path, final_dir: Path, run_key: str) -> None:
    write_json(Path(out_dir) / CURRENT, {"final": str(final_dir), "run_key": run_key})
