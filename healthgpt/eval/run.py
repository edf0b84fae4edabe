"""One evaluation family end to end into its output directory, without Dagster.

Each `run_*` builds `<out>/` atomically: the `predictions-*.parquet` shards and `scores.json`
(what the report reads) appear together, and a failure leaves the previous directory as it
was. The model comes from a zero-argument factory so that loading weights is skipped when
there is nothing to evaluate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from healthgpt.data.shards import ShardInfo
from healthgpt.eval import generation, mcq, report, vqa
from healthgpt.eval.metrics import SSIM_WINDOWS, load_lpips
from healthgpt.eval.predict import TEMPLATES, EvalResult, ImageModel, TextModel
from healthgpt.storage import atomic_directory, atomic_write_text, write_json

FAMILIES = ("vqa", "mcq", "generation")
SCORES_NAME = "scores.json"
REPORT_NAME = "report.md"

M = TypeVar("M")


@dataclass
class FamilyRun:
    """What one family's run left in `out`, for a caller to show (`scores.json` holds it too)."""

    model: str
    scores: dict[str, dict[str, Any]]
    notes: list[str]
    summary: str
    out: Path
    shards: list[ShardInfo] = field(default_factory=list)
    grid_png: bytes | None = None


@dataclass(frozen=True)
class RunOptions:
    """What every family's run shares: batching, a cap per benchmark for smoke runs (0 = all),
    the model's label and the run config recorded in `scores.json`."""

    batch_size: int
    limit: int
    label: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class McqSources:
    """Where the multiple-choice benchmarks are (by name; absent = not configured) and which
    part of each to read."""

    roots: Mapping[str, Path]
    mmmu_subjects: Sequence[str] = mcq.MMMU_MEDICAL_SUBJECTS
    mmmu_split: str = "validation"
    omnimedvqa_access: Sequence[str] = ("Open-access",)


@dataclass(frozen=True)
class ReportRun:
    """The rendered report, where it was written, and which families had scores."""

    markdown: str
    path: Path
    evaluated: dict[str, bool]


def model_notes(model: object) -> list[str]:
    """How the model's weights were loaded, when its adapter says (HealthGPTText/Image do)."""
    return list(getattr(model, "notes", []))


def _build(model_factory: Callable[[], M], notes: list[str]) -> M:
    """The model, with its loading notes appended to `notes`."""
    model = model_factory()
    notes += model_notes(model)
    return model


def _counts(scores: Mapping[str, Mapping[str, Any]], unit: str) -> str:
    return ", ".join(f"{name} {row['n']} {unit}" for name, row in scores.items())


def _scores_payload(run: FamilyRun, key: str, config: Mapping[str, Any], **extra: Any) -> dict:
    return {
        "model": run.model,
        key: run.scores,
        "notes": run.notes,
        "summary": run.summary,
        **extra,
        "config": dict(config),
    }


def _text_run(label: str, result: EvalResult, out: Path) -> FamilyRun:
    counts = _counts(result.benchmarks, "questions")
    return FamilyRun(label, result.benchmarks, result.notes, counts, out, result.shards)


def run_vqa(
    model_factory: Callable[[], TextModel],
    sources: Mapping[str, Path],
    out: Path,
    options: RunOptions,
) -> FamilyRun:
    """VQA-RAD / SLAKE / PathVQA test splits into `out`; no model is built when no source
    has an ingested test split."""
    with atomic_directory(out) as staging:
        if any(vqa.test_shards(directory) for directory in sources.values()):
            notes: list[str] = []
            model = _build(model_factory, notes)
            result = vqa.evaluate_vqa(model, sources, staging, options.batch_size, options.limit)
            result.notes += notes
        else:
            result = EvalResult({}, [], [f"no ingested test split for {', '.join(sources)}"])
        run = _text_run(options.label, result, out)
        payload = _scores_payload(
            run, "benchmarks", options.config, prompt_template=TEMPLATES["vqa"]
        )
        write_json(staging / SCORES_NAME, payload)
    return run


def _mcq_benchmarks(sources: McqSources, limit: int, skips: mcq.OmniSkips) -> dict[str, Any]:
    """The configured benchmarks' question streams, MMMU first (the report's order)."""
    benchmarks: dict[str, Any] = {}
    if "mmmu_med" in sources.roots:
        benchmarks["mmmu_med"] = mcq.read_mmmu(
            sources.roots["mmmu_med"], sources.mmmu_subjects, sources.mmmu_split, limit
        )
    if "omnimedvqa" in sources.roots:
        benchmarks["omnimedvqa"] = mcq.read_omnimedvqa(
            sources.roots["omnimedvqa"], sources.omnimedvqa_access, limit, skips
        )
    return benchmarks


def _mcq_notes(sources: McqSources, skips: mcq.OmniSkips) -> list[str]:
    """Why a benchmark is missing or smaller than published: never silent."""
    notes = []
    missing = [name for name in mcq.MCQ_BENCHMARKS if name not in sources.roots]
    if missing:
        notes.append(
            f"not configured: {', '.join(missing)} (set mmmu_dir / omnimedvqa_dir or "
            "HEALTHGPT_MMMU_DIR / HEALTHGPT_OMNIMEDVQA_DIR to the published layouts)"
        )
    return notes + [f"omnimedvqa: {n} rows skipped: {r}" for r, n in skips.reasons.items()]


def run_mcq(
    model_factory: Callable[[], TextModel],
    sources: McqSources,
    out: Path,
    options: RunOptions,
) -> FamilyRun:
    """MMMU (medical subjects) and OmniMedVQA into `out`; no model is built when neither is
    configured."""
    skips = mcq.OmniSkips()
    with atomic_directory(out) as staging:
        benchmarks = _mcq_benchmarks(sources, options.limit, skips)
        if benchmarks:
            notes: list[str] = []
            model = _build(model_factory, notes)
            result = mcq.evaluate_mcq(model, benchmarks, staging, options.batch_size)
            result.notes += notes
        else:
            result = EvalResult({}, [])
        result.notes += _mcq_notes(sources, skips)
        run = _text_run(options.label, result, out)
        payload = _scores_payload(
            run,
            "benchmarks",
            options.config,
            configured=bool(sources.roots),
            prompt_template=TEMPLATES["mcq"],
        )
        write_json(staging / SCORES_NAME, payload)
    return run


def run_generation(
    model_factory: Callable[[], ImageModel],
    pairs_dir: Path,
    out: Path,
    options: RunOptions,
    *,
    split: str = "test",
    ssim_window: str = "gaussian",
    lpips: bool = True,
    keep_images: bool = True,
    grid_per_task: int = 3,
) -> FamilyRun:
    """Held-out generation pairs into `out` (scores, predictions, grid.png); no model is built
    when there is no pair of `split`."""
    if ssim_window not in SSIM_WINDOWS:
        raise ValueError(f"ssim_window must be one of {SSIM_WINDOWS}, got {ssim_window!r}")
    lpips_fn, lpips_note = load_lpips() if lpips else (None, "LPIPS disabled by config")
    notes = [] if lpips_fn else [lpips_note]
    with atomic_directory(out) as staging:
        pairs = generation.read_pairs(pairs_dir, split, limit=options.limit)
        first = next(pairs, None)
        if first is None:
            notes.append(f"no held-out {split} generation pairs under {pairs_dir}")
            result = generation.GenerationResult({}, [], None)
        else:
            result = generation.evaluate_generation(
                _build(model_factory, notes),
                itertools.chain([first], pairs),
                staging,
                batch_size=options.batch_size,
                window=ssim_window,
                lpips_fn=lpips_fn,
                keep_images=keep_images,
                grid_per_column=grid_per_task,
            )
        if result.grid_png:
            (staging / "grid.png").write_bytes(result.grid_png)
        counts = _counts(result.scores, "pairs")
        run = FamilyRun(
            options.label, result.scores, notes, counts, out, result.shards, result.grid_png
        )
        payload = _scores_payload(run, "columns", options.config, ssim_window=ssim_window)
        write_json(staging / SCORES_NAME, payload)
    return run


def run_report(eval_dir: Path) -> ReportRun:
    """`<eval_dir>/report.md` from each family's `scores.json`, written atomically so a reader
    never sees half a report; a family never evaluated shows as empty rows."""
    scores = {f: report.read_scores(eval_dir / f / SCORES_NAME) for f in FAMILIES}
    markdown = report.render_report(scores["vqa"], scores["mcq"], scores["generation"])
    path = eval_dir / REPORT_NAME
    atomic_write_text(path, markdown)
    return ReportRun(markdown, path, {f: scores[f] is not None for f in FAMILIES})
