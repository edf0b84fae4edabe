"""Evaluation group: one asset per benchmark family, then the report beside the paper's tables.

Each evaluation asset writes `<data>/eval/<family>/` atomically: `predictions-*.parquet` (every
raw reply with its parse and score) and `scores.json` (what the report reads). The work is in
`healthgpt.eval.run`; the assets here wire config and resources to it and turn what it returns
into metadata. The model comes from the `eval_models` resource: by default the newest
checkpoint of the configured training stage, or the official HealthGPT weights when
`official_weights_dir` is set; a test or a user can swap in any `TextModel` / `ImageModel` by
replacing the resource.
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from healthgpt.data.shards import open_shard
from healthgpt.eval import models, registry, run
from healthgpt.eval.forms import QuestionForm, question_form
from healthgpt.eval.predict import ImageModel, TextModel
from healthgpt.settings import settings
from healthgpt.storage import output_path
from pipelines.automation import training_automation_condition
from pipelines.metadata import png_markdown, records_table, shard_metadata
from pipelines.mixture import PRESETS
from pipelines.resources import DataLocations
from pipelines.sources import ingested_key

GROUP = "evaluation"
OWNERS = ["team:eval"]
TRAIN_STAGE3 = dg.AssetKey(["train_stage3"])


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

    def medical(self, spec: models.ModelSpec) -> bool | None:
        """Whether the model is a medical one (Table 1's "Medical" column): a HealthGPT
        checkpoint or the official weights are; a subclass that builds other models says so
        by overriding this (None: not known, shown as "?")."""
        builds_healthgpt = type(self).text_model is EvalModels.text_model
        return True if builds_healthgpt else None


# Run config fields passed on to `models.ModelSpec` only when the run config sets them
# (`model_fields_set`), so that an unset one keeps the model's default; "" means None.
MODEL_SPEC_FIELDS = frozenset(
    {
        "max_new_tokens",
        "vq_path",
        "vq_sha256",
        "vq_yaml_path",
        "vq_yaml_sha256",
        "vq_dry_run",
        "allow_partial_weights",
    }
)


class EvalModelConfig(dg.Config):
    """Which model to evaluate and how to run it (shared by every evaluation asset)."""

    stage: str = "stage3"  # newest checkpoint of this stage under <data>/checkpoints/
    checkpoint_dir: str = ""  # an explicit checkpoint directory (overrides `stage`)
    official_weights_dir: str = ""  # official HealthGPT files (overrides both)
    preset: str = ""  # model preset; "" = the checkpoint's own, or "m3" for official weights
    batch_size: int = 8
    # Answer length cap; unset = the model's own (1024 for m3/l14 as the official scripts, a
    # short one for the small presets): see `models.default_max_new_tokens`.
    max_new_tokens: int | None = None
    limit: int = 0  # at most this many items per benchmark (0 = all), for smoke runs
    # Official weights: the VQGAN that decodes images (taming last.ckpt + model.yaml, or a
    # save_vq safetensors file), each with the sha256 recorded when it was registered.
    vq_path: str = ""
    vq_sha256: str = ""
    vq_yaml_path: str = ""
    vq_yaml_sha256: str = ""
    vq_dry_run: bool = False  # let m3/l14 generate with a random VQGAN (a dry run)
    allow_partial_weights: bool = False  # load official files that leave tensors unfilled

    def run_options(self, label: str, medical: bool | None = None) -> run.RunOptions:
        return run.RunOptions(self.batch_size, self.limit, label, self.model_dump(), medical)

    def model_spec(self, checkpoints_root: Path) -> models.ModelSpec:
        checkpoint = self.checkpoint_dir or models.resolve_checkpoint(checkpoints_root, self.stage)
        if self.official_weights_dir:
            name = f"official weights {Path(self.official_weights_dir).name}"
        else:
            name = f"{self.stage} checkpoint" if not self.checkpoint_dir else "checkpoint"
        # Only what the run config sets overrides the model's own defaults.
        named = sorted(self.model_fields_set & MODEL_SPEC_FIELDS)
        overrides = {f: None if getattr(self, f) == "" else getattr(self, f) for f in named}
        return models.ModelSpec(
            preset=self.preset,
            checkpoint=str(checkpoint) if checkpoint else None,
            official_dir=self.official_weights_dir or None,
            name=name + (f" ({self.preset})" if self.preset else ""),
            **overrides,
        )


class TextEvalConfig(EvalModelConfig):
    """Which registered benchmarks of the asset's family to run, and where their roots are.

    `benchmarks`: names from `healthgpt.eval.registry` (empty = every one of the family).
    `roots`: benchmark -> root; otherwise an ingested benchmark reads `<data>/ingested/<name>`
    and an external one its environment variable (`HEALTHGPT_MMMU_DIR`, ...).
    `mixture_preset`: the training config whose question forms are used when neither the
    checkpoint's record nor the built mixture (`<data>/mixture/_manifest.json`) says."""

    benchmarks: list[str] = []
    roots: dict[str, str] = {}
    mixture_preset: str | None = None  # None: HEALTHGPT_MIXTURE_PRESET, else demo

    def selected(self, family: str) -> list[registry.Benchmark]:
        for name in self.benchmarks:
            registry.get(name)  # an unknown name is an error, not an empty run
        names = self.benchmarks or [b.name for b in registry.family(family)]
        return [b for b in registry.family(family) if b.name in names]

    def bench_roots(self, family: str, locations: DataLocations) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for bench in self.selected(family):
            if bench.name in self.roots:
                found[bench.name] = Path(self.roots[bench.name])
            elif bench.root == "ingested":
                found[bench.name] = locations.ingested_dir(bench.name)
            elif settings().value(bench.env):
                found[bench.name] = Path(settings().value(bench.env))
        return found

    def question_form(self, locations: DataLocations, spec: models.ModelSpec) -> QuestionForm:
        """The question form of the evaluated model (`healthgpt.eval.forms`): official weights
        are asked plainly; a pipeline checkpoint in the mixture it recorded; else the mixture
        on disk, else `mixture_preset`, and the report says so."""
        preset = self.mixture_preset or settings().mixture_preset
        if preset not in PRESETS:
            raise ValueError(f"mixture_preset must be one of {sorted(PRESETS)}, got {preset!r}")
        return question_form(
            bool(spec.official_dir),
            spec.checkpoint,
            locations.mixture_dir(),
            PRESETS[preset],
        )


class GenerationEvalConfig(EvalModelConfig):
    batch_size: int = 4
    pairs_dir: str = ""  # default <data>/mixture/eval (the mixture's held-out pairs)
    split: str = "test"
    ssim_window: str = "gaussian"  # gaussian (Wang et al. 2004) | uniform (skimage default)
    lpips: bool = True  # computed only when the lpips package and its weights are on disk
    keep_images: bool = True
    grid_per_task: int = 3

    def pairs_path(self, locations: DataLocations) -> Path:
        return output_path(self.pairs_dir) if self.pairs_dir else locations.mixture_dir() / "eval"


def eval_dir(locations: DataLocations) -> Path:
    return locations.output_dir() / "eval"


def family_dir(locations: DataLocations, family: str) -> Path:
    return eval_dir(locations) / family


def _preview(directory: Path, limit: int = 8) -> dg.MarkdownMetadataValue:
    files = sorted(directory.glob("predictions-*.parquet"))
    if not files:
        return dg.MetadataValue.md("_no predictions_")
    columns = ["benchmark", "source", "form", "answer", "prediction", "score", "score_llava_med"]
    batch = next(open_shard(files[0]).iter_batches(batch_size=limit, columns=columns), None)
    return records_table(batch.to_pylist() if batch is not None else [], limit)


def _summary_table(rows: dict[str, dict[str, Any]], fields: list[str]) -> dg.MarkdownMetadataValue:
    header = "| benchmark | " + " | ".join(fields) + " |\n|" + "---|" * (len(fields) + 1)
    body = "\n".join(
        f"| {name} | " + " | ".join(str(r.get(f, "–")) for f in fields) + " |"
        for name, r in rows.items()
    )
    return dg.MetadataValue.md(f"{header}\n{body}" if rows else "_nothing evaluated_")


def _notes(notes: list[str]) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "_none_")


def _result_metadata(
    done: run.FamilyRun, fields: list[str], **extra: dg.MetadataValue
) -> dict[str, Any]:
    """The metadata every evaluation asset shows: model, scores, notes, output, predictions."""
    return {
        "model": done.model,
        "scores": _summary_table(_flat(done), fields),
        "notes": _notes(done.notes),
        **extra,
        "path": dg.MetadataValue.path(str(done.out)),
        **shard_metadata(done.shards),
    }


def _by_modality(done: run.FamilyRun) -> dict[str, dict[str, Any]]:
    """MCQ accuracy per `<benchmark>/<modality>` (Table 9's rows)."""
    return {
        f"{b}/{m}": {"accuracy": (v or {}).get("value"), "n": (v or {}).get("n")}
        for b, r in done.scores.items()
        for m, v in r["by_modality"].items()
    }


def _flat(done: run.FamilyRun) -> dict[str, dict[str, Any]]:
    """Per benchmark: every score cell's value with its n, for the summary table."""
    rows: dict[str, dict[str, Any]] = {}
    for name, result in done.scores.items():
        row = {}
        for key, value in result.items():
            if isinstance(value, dict) and "value" in value:
                row[key] = f"{value['value']} (n={value['n']})"
            elif isinstance(value, dict) and key == "llava_med":
                row.update(
                    {
                        f"{k} (LLaVA-Med)": f"{c['value']} (n={c['n']})"
                        for k, c in value.items()
                        if c
                    }
                )
            elif not isinstance(value, dict):
                row[key] = value
        rows[name] = row
    return rows


def _text_asset(
    family: str,
    config: TextEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> run.FamilyRun:
    spec = config.model_spec(eval_models.checkpoints_root(locations))
    form = config.question_form(locations, spec)
    return run.run_benchmarks(
        family,
        lambda: eval_models.text_model(spec),
        config.bench_roots(family, locations),
        family_dir(locations, family),
        config.run_options(eval_models.label(spec), eval_models.medical(spec)),
        trained=form.trained,
        names=[b.name for b in config.selected(family)],
        form_source=form.source,
    )


# What the three benchmark-family assets share in the UI and in automation.
FAMILY_ASSET: dict[str, Any] = {
    "group_name": GROUP,
    "kinds": {"python", "parquet"},
    "owners": OWNERS,
    "automation_condition": training_automation_condition(),
}


def _text_metadata(done: run.FamilyRun, fields: list[str]) -> dict[str, Any]:
    forms = json.loads((done.out / run.SCORES_NAME).read_text()).get("prompt_forms", {})
    return _result_metadata(
        done,
        fields,
        prompt_forms=dg.MetadataValue.json(forms),
        preview=_preview(done.out),
    )


@dg.asset(
    key="eval_vqa",
    deps=[TRAIN_STAGE3, *(ingested_key(b.name) for b in registry.family("vqa"))],
    **FAMILY_ASSET,
    description="VQA-RAD, SLAKE, PathVQA test splits in the trained question form: close, "
    "open, all, by the strict and by LLaVA-Med's scorer.",
)
def eval_vqa(
    context: dg.AssetExecutionContext,
    config: TextEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    done = _text_asset("vqa", config, locations, eval_models)
    context.log.info(f"eval_vqa: {done.summary or 'nothing evaluated'}")
    return dg.MaterializeResult(
        metadata=_text_metadata(
            done, ["close", "all", "open", "close (LLaVA-Med)", "all (LLaVA-Med)"]
        )
    )


@dg.asset(
    key="eval_mcq",
    deps=[TRAIN_STAGE3],
    **FAMILY_ASSET,
    description="MMMU (150 medical validation questions) and OmniMedVQA, when configured.",
)
def eval_mcq(
    context: dg.AssetExecutionContext,
    config: TextEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    done = _text_asset("mcq", config, locations, eval_models)
    context.log.info(f"eval_mcq: {done.summary or 'not configured'}")
    metadata = _text_metadata(done, ["accuracy", "n", "unparsed", "random_choices"])
    metadata["by_modality"] = _summary_table(_by_modality(done), ["accuracy", "n"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key="eval_generation",
    deps=[TRAIN_STAGE3, dg.AssetKey(["mixture", "eval"])],
    **FAMILY_ASSET,
    description="CT<->MRI conversion, 4x super-resolution, reconstruction: SSIM, PSNR, MSE, LPIPS.",
)
def eval_generation(
    context: dg.AssetExecutionContext,
    config: GenerationEvalConfig,
    locations: DataLocations,
    eval_models: EvalModels,
) -> dg.MaterializeResult:
    spec = config.model_spec(eval_models.checkpoints_root(locations))
    done = run.run_generation(
        lambda: eval_models.image_model(spec),
        config.pairs_path(locations),
        family_dir(locations, "generation"),
        config.run_options(eval_models.label(spec), eval_models.medical(spec)),
        **config.model_dump(
            include={"split", "ssim_window", "lpips", "keep_images", "grid_per_task"}
        ),
    )
    context.log.info(f"eval_generation: {done.summary or 'nothing evaluated'}")
    metadata = _result_metadata(done, ["ssim", "psnr", "mse", "lpips", "n"])
    if done.grid_png:
        metadata["grid"] = png_markdown(done.grid_png, "input | target | generated")
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
    written = run.run_report(eval_dir(locations))
    context.log.info(f"eval_report: wrote {written.path}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(written.markdown),
            "table1": png_markdown(written.png, "Table 1: this run vs the paper"),
            "path": dg.MetadataValue.path(str(written.path)),
            "evaluated": dg.MetadataValue.json(written.evaluated),
        }
    )


evaluation_assets = [eval_vqa, eval_mcq, eval_generation, eval_report]
