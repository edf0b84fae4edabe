"""Evaluation group: one asset per benchmark family, then the report beside the paper's tables.

Each evaluation asset writes `<data>/eval/<family>/` atomically: `predictions-*.parquet` (every
raw reply with its parse and score) and `scores.json` (what the report reads). The model comes
from the `eval_models` resource: by default the newest checkpoint of the configured training
stage, or the official HealthGPT weights when `official_weights_dir` is set; a test or a user
can swap in any `TextModel` / `ImageModel` by replacing the resource.
"""

import itertools
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from healthgpt.data.shards import atomic_directory, write_json
from healthgpt.eval import generation, mcq, models, report, vqa
from healthgpt.eval.metrics import SSIM_WINDOWS, load_lpips
from healthgpt.eval.predict import TEMPLATES, EvalResult, ImageModel, TextModel
from pipelines.automation import training_automation_condition
from pipelines.metadata import png_markdown, records_table, shard_metadata
from pipelines.resources import DataLocations
from pipelines.sources import ingested_key

GROUP = "evaluation"
OWNERS = ["team:eval"]
TRAIN_STAGE3 = dg.AssetKey(["train_stage3"])
FAMILIES = ("vqa", "mcq", "generation")


class EvalModels(dg.ConfigurableResource):
    """Builds the model an evaluation runs. Subclass it to evaluate any other model."""

    checkpoints_dir: str = ""  # where training stages write checkpoints; "" = <data>/checkpoints

    def checkpoints_root(self, locations: DataLocations) -> Path:
        if self.checkpoints_dir:
            return Path(self.checkpoints_dir).absolute()
        return locations.output_dir() / "checkpoints"

    def text_model(self, spec: models.ModelSpec) -> TextModel:
        return models.text_model(spec)

    def image_model(self, spec: models.ModelSpec) -> ImageModel:
        return models.image_model(spec)

    def label(self, spec: models.ModelSpec) -> str:
        return spec.label


class EvalModelConfig(dg.Config):
    """Which model to evaluate and how to run it (shared by every evaluation asset)."""

    stage: str = "stage3"  # newest checkpoint of this stage under <data>/checkpoints/
    checkpoint_dir: str = ""  # an explicit checkpoint directory (overrides `stage`)
    official_weights_dir: str = ""  # official HealthGPT files (overrides both)
    preset: str = ""  # model preset; "" = the checkpoint's own, or "m3" for official weights
    batch_size: int = 8
    max_new_tokens: int = 32
    limit: int = 0  # at most this many items per benchmark (0 = all), for smoke runs

    def model_spec(self, checkpoints_root: Path) -> models.ModelSpec:
        checkpoint = self.checkpoint_dir or models.resolve_checkpoint(checkpoints_root, self.stage)
        if self.official_weights_dir:
            name = f"official weights {Path(self.official_weights_dir).name}"
        else:
            name = f"{self.stage} checkpoint" if not self.checkpoint_dir else "checkpoint"
        return models.ModelSpec(
            preset=self.preset,
            checkpoint=str(checkpoint) if checkpoint else None,
            official_dir=self.official_weights_dir or None,
            max_new_tokens=self.max_new_tokens,
            name=name + (f" ({self.preset})" if self.preset else ""),
        )


class VqaEvalConfig(EvalModelConfig):
    sources: list[str] = list(vqa.VQA_BENCHMARKS)


class McqEvalConfig(EvalModelConfig):
    # Empty means the environment: HEALTHGPT_MMMU_DIR / HEALTHGPT_OMNIMEDVQA_DIR.
    mmmu_dir: str = ""
    mmmu_subjects: list[str] = list(mcq.MMMU_MEDICAL_SUBJECTS)
    mmmu_split: str = "validation"
    omnimedvqa_dir: str = ""
    omnimedvqa_access: list[str] = ["Open-access"]

    def roots(self) -> dict[str, Path]:
        found = {
            "mmmu_med": self.mmmu_dir or os.environ.get("HEALTHGPT_MMMU_DIR", ""),
            "omnimedvqa": self.omnimedvqa_dir or os.environ.get("HEALTHGPT_OMNIMEDVQA_DIR", ""),
        }
        return {name: Path(value) for name, value in found.items() if value}


class GenerationEvalConfig(EvalModelConfig):
    batch_size: int = 4
    pairs_dir: str = ""  # default <data>/mixture/eval (the mixture's held-out pairs)
    split: str = "test"
    ssim_window: str = "gaussian"  # gaussian (Wang et al. 2004) | uniform (skimage default)
    lpips: bool = True  # computed only when the lpips package and its weights are on disk
    keep_images: bool = True
    grid_per_task: int = 3


def family_dir(locations: DataLocations, family: str) -> Path:
    return locations.output_dir() / "eval" / family


def _payload(label: str, result: EvalResult, key: str, summary: str, **extra: Any) -> dict:
    return {
        "model": label,
        key: result.benchmarks,
        "notes": result.notes,
        "summary": summary,
        **extra,
    }


def _preview(directory: Path, limit: int = 8) -> dg.MarkdownMetadataValue:
    files = sorted(directory.glob("predictions-*.parquet"))
    if not files:
        return dg.MetadataValue.md("_no predictions_")
    columns = ["benchmark", "question", "answer", "prediction", "rule", "score"]
    batch = next(pq.ParquetFile(files[0]).iter_batches(batch_size=limit, columns=columns), None)
    return records_table(batch.to_pylist() if batch is not None else [], limit)


def _summary_table(rows: dict[str, dict[str, Any]], fields: list[str]) -> dg.MarkdownMetadataValue:
    header = "| benchmark | " + " | ".join(fields) + " |\n|" + "---|" * (len(fields) + 1)
    body = "\n".join(
        f"| {name} | " + " | ".join(str(r.get(f, "–")) for f in fields) + " |"
        for name, r in rows.items()
    )
    return dg.MetadataValue.md(f"{header}\n{body}" if rows else "_nothing evaluated_")


def _model_notes(model: object) -> list[str]:
    """How the model's weights were loaded, when its adapter says (HealthGPTText/Image do)."""
    return list(getattr(model, "notes", []))


def _notes(notes: list[str]) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "_none_")


def _result_metadata(
    label: str,
    scores: dg.MarkdownMetadataValue,
    notes: list[str],
    out: Path,
    shards: list,
    **extra: dg.MetadataValue,
) -> dict[str, Any]:
    """The metadata every evaluation asset shows: model, scores, notes, output, predictions."""
    return {
        "model": label,
        "scores": scores,
        "notes": _notes(notes),
        **extra,
        "path": dg.MetadataValue.path(str(out)),
        **shard_metadata(shards),
    }


@dg.asset(
    key="eval_vqa",
    deps=[TRAIN_STAGE3, *(ingested_key(name) for name in vqa.VQA_BENCHMARKS)],
    group_name=GROUP,
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    description="VQA-RAD, SLAKE, PathVQA test splits: closed accuracy, all-question accuracy.",
)
def eval_vqa(
    context: dg.AssetExecutionContext,
    config: VqaEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    spec = config.model_spec(eval_models.checkpoints_root(locations))
    sources = {name: locations.ingested_dir(name) for name in config.sources}
    out = family_dir(locations, "vqa")
    with atomic_directory(out) as staging:
        if any(vqa.test_shards(d) for d in sources.values()):
            model = eval_models.text_model(spec)
            result = vqa.evaluate_vqa(model, sources, staging, config.batch_size, config.limit)
            result.notes += _model_notes(model)
        else:
            result = EvalResult({}, [], [f"no ingested test split for {', '.join(sources)}"])
        counts = ", ".join(f"{k} {v['n']} questions" for k, v in result.benchmarks.items())
        write_json(
            staging / "scores.json",
            _payload(
                eval_models.label(spec),
                result,
                "benchmarks",
                counts,
                prompt_template=TEMPLATES["vqa"],
                config=config.model_dump(),
            ),
        )
    context.log.info(f"eval_vqa: {counts or 'nothing evaluated'}")
    return dg.MaterializeResult(
        metadata=_result_metadata(
            eval_models.label(spec),
            _summary_table(result.benchmarks, ["close", "all", "open", "n_closed", "n_open"]),
            result.notes,
            out,
            result.shards,
            prompt_template=dg.MetadataValue.text(TEMPLATES["vqa"]),
            preview=_preview(out),
        )
    )


@dg.asset(
    key="eval_mcq",
    deps=[TRAIN_STAGE3],
    group_name=GROUP,
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    description="MMMU (medical subjects) and OmniMedVQA multiple choice, when configured.",
)
def eval_mcq(
    context: dg.AssetExecutionContext,
    config: McqEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    spec = config.model_spec(eval_models.checkpoints_root(locations))
    roots = config.roots()
    out = family_dir(locations, "mcq")
    skips = mcq.OmniSkips()
    with atomic_directory(out) as staging:
        benchmarks = {}
        if "mmmu_med" in roots:
            benchmarks["mmmu_med"] = mcq.read_mmmu(
                roots["mmmu_med"], config.mmmu_subjects, config.mmmu_split, config.limit
            )
        if "omnimedvqa" in roots:
            benchmarks["omnimedvqa"] = mcq.read_omnimedvqa(
                roots["omnimedvqa"], config.omnimedvqa_access, config.limit, skips
            )
        if benchmarks:
            model = eval_models.text_model(spec)
            result = mcq.evaluate_mcq(model, benchmarks, staging, config.batch_size)
            result.notes += _model_notes(model)
        else:
            result = EvalResult({}, [])
        missing = [n for n in mcq.MCQ_BENCHMARKS if n not in roots]
        if missing:
            result.notes.append(
                f"not configured: {', '.join(missing)} (set mmmu_dir / omnimedvqa_dir or "
                "HEALTHGPT_MMMU_DIR / HEALTHGPT_OMNIMEDVQA_DIR to the published layouts)"
            )
        result.notes += [f"omnimedvqa: {n} rows skipped: {r}" for r, n in skips.reasons.items()]
        counts = ", ".join(f"{k} {v['n']} questions" for k, v in result.benchmarks.items())
        write_json(
            staging / "scores.json",
            _payload(
                eval_models.label(spec),
                result,
                "benchmarks",
                counts,
                configured=bool(roots),
                prompt_template=TEMPLATES["mcq"],
                config=config.model_dump(),
            ),
        )
    context.log.info(f"eval_mcq: {counts or 'not configured'}")
    by_modality = {
        f"{b}/{m}": v for b, r in result.benchmarks.items() for m, v in r["by_modality"].items()
    }
    return dg.MaterializeResult(
        metadata=_result_metadata(
            eval_models.label(spec),
            _summary_table(result.benchmarks, ["accuracy", "n", "unparsed"]),
            result.notes,
            out,
            result.shards,
            configured=dg.MetadataValue.bool(bool(roots)),
            by_modality=_summary_table(by_modality, ["accuracy", "n"]),
            prompt_template=dg.MetadataValue.text(TEMPLATES["mcq"]),
            preview=_preview(out),
        )
    )


@dg.asset(
    key="eval_generation",
    deps=[TRAIN_STAGE3, dg.AssetKey(["mixture", "eval"])],
    group_name=GROUP,
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    description="CT<->MRI conversion, 4x super-resolution, reconstruction: SSIM, PSNR, MSE, LPIPS.",
)
def eval_generation(
    context: dg.AssetExecutionContext,
    config: GenerationEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    if config.ssim_window not in SSIM_WINDOWS:
        raise ValueError(f"ssim_window must be one of {SSIM_WINDOWS}, got {config.ssim_window!r}")
    spec = config.model_spec(eval_models.checkpoints_root(locations))
    pairs_dir = (
        Path(config.pairs_dir) if config.pairs_dir else locations.output_dir() / "mixture" / "eval"
    )
    out = family_dir(locations, "generation")
    lpips_fn, lpips_note = load_lpips() if config.lpips else (None, "LPIPS disabled by config")
    notes = [] if lpips_fn else [lpips_note]
    with atomic_directory(out) as staging:
        pairs = generation.read_pairs(pairs_dir, config.split, limit=config.limit)
        first = next(pairs, None)
        if first is None:
            notes.append(f"no held-out {config.split} generation pairs under {pairs_dir}")
            result = generation.GenerationResult({}, [], None)
        else:
            model = eval_models.image_model(spec)
            notes += _model_notes(model)
            result = generation.evaluate_generation(
                model,
                itertools.chain([first], pairs),
                staging,
                batch_size=config.batch_size,
                window=config.ssim_window,
                lpips_fn=lpips_fn,
                keep_images=config.keep_images,
                grid_per_column=config.grid_per_task,
            )
        if result.grid_png:
            (staging / "grid.png").write_bytes(result.grid_png)
        counts = ", ".join(f"{k} {v['n']} pairs" for k, v in result.scores.items())
        write_json(
            staging / "scores.json",
            {
                "model": eval_models.label(spec),
                "columns": result.scores,
                "notes": notes,
                "summary": counts,
                "ssim_window": config.ssim_window,
                "config": config.model_dump(),
            },
        )
    context.log.info(f"eval_generation: {counts or 'nothing evaluated'}")
    metadata = _result_metadata(
        eval_models.label(spec),
        _summary_table(result.scores, ["ssim", "psnr", "mse", "lpips", "n"]),
        notes,
        out,
        result.shards,
    )
    if result.grid_png:
        metadata["grid"] = png_markdown(result.grid_png, "input | target | generated")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key="eval_report",
    deps=["eval_vqa", "eval_mcq", "eval_generation"],
    group_name=GROUP,
    kinds={"python"},
    owners=OWNERS,
    automation_condition=training_automation_condition(),
    description="The paper's Tables 1-3 (and 9) with this run's numbers beside the published ones.",
)
def eval_report(
    context: dg.AssetExecutionContext, locations: DataLocations
) -> dg.MaterializeResult:
    scores = {f: report.read_scores(family_dir(locations, f) / "scores.json") for f in FAMILIES}
    markdown = report.render_report(scores["vqa"], scores["mcq"], scores["generation"])
    path = locations.output_dir() / "eval" / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(markdown)
    tmp.replace(path)
    context.log.info(f"eval_report: wrote {path}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "path": dg.MetadataValue.path(str(path)),
            "evaluated": dg.MetadataValue.json({f: scores[f] is not None for f in FAMILIES}),
        }
    )


evaluation_assets = [eval_vqa, eval_mcq, eval_generation, eval_report]
