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

from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.shards import ShardInfo
from healthgpt.data.tasks import EVAL_FORMS, PLAIN, closed_question_form
from healthgpt.eval import generation, mcq, registry, report, vqa
from healthgpt.eval.metrics import SSIM_WINDOWS, load_lpips
from healthgpt.eval.predict import (
    TEMPLATES,
    EvalResult,
    ImageModel,
    TextModel,
    predict_and_score,
    prediction_writer,
)
from healthgpt.progress import Progress
from healthgpt.storage import atomic_directory, atomic_write_bytes, atomic_write_text, write_json
from healthgpt.train.model_card import record_evaluation

FAMILIES = ("vqa", "mcq", "generation")
SCORES_NAME = "scores.json"
REPORT_NAME = "report.md"
REPORT_PNG = "report.png"
TALLIES = {"vqa": vqa.VqaTally, "mcq": mcq.McqTally}

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
    checkpoint: str | None = None  # the pipeline checkpoint file evaluated (None: another model)


@dataclass(frozen=True)
class RunOptions:
    """What every family's run shares: batching, a cap per benchmark for smoke runs (0 = all),
    the model's label, whether it is a medical model (None: not known; Table 1's "Medical"
    column) and the run config recorded in `scores.json`."""

    batch_size: int
    limit: int
    label: str
    config: Mapping[str, Any] = field(default_factory=dict)
    medical: bool | None = None


@dataclass(frozen=True)
class ReportRun:
    """The rendered report, where it was written, and which families had scores."""

    markdown: str
    path: Path
    evaluated: dict[str, bool]
    png: bytes | None = None


def model_notes(model: object) -> list[str]:
    """How the model's weights were loaded, when its adapter says (HealthGPTText/Image do)."""
    return list(getattr(model, "notes", []))


def model_checkpoint(model: object) -> str | None:
    """The pipeline checkpoint file the model was loaded from, when its adapter says
    (HealthGPTText/Image do; None for official weights or any other model)."""
    checkpoint = getattr(model, "checkpoint", None)
    return str(checkpoint) if checkpoint else None


def _build(model_factory: Callable[[], M], notes: list[str]) -> M:
    """The model, with its loading notes appended to `notes`."""
    model = model_factory()
    notes += model_notes(model)
    return model


def _counts(scores: Mapping[str, Mapping[str, Any]], unit: str) -> str:
    return ", ".join(f"{name} {row['n']} {unit}" for name, row in scores.items())


def _scores_payload(run: FamilyRun, key: str, options: RunOptions, **extra: Any) -> dict:
    return {
        "model": run.model,
        "checkpoint": run.checkpoint,
        "medical": options.medical,
        key: run.scores,
        "notes": run.notes,
        "summary": run.summary,
        **extra,
        "config": dict(options.config),
    }


def _text_run(label: str, result: EvalResult, out: Path) -> FamilyRun:
    counts = _counts(result.benchmarks, "questions")
    return FamilyRun(label, result.benchmarks, result.notes, counts, out, result.shards)


def prompt_forms(trained: MixtureConfig | None, source: str = "") -> dict[str, str]:
    """How each kind of question is asked, and from what that form was decided
    (`forms.question_form`), for `scores.json` and the report."""
    if trained is None:
        closed = PLAIN + ("" if source else " (no training config known)")
    else:
        style = trained.closed_question_style
        closed = f"{closed_question_form(style)} (trained: closed_question_style={style})"
    forms = {
        "vqa closed": closed,
        "vqa open": EVAL_FORMS["vqa_open"],
        "multiple choice": TEMPLATES["mcq"].replace("\n", " / "),
        "mmmu open": TEMPLATES["open"].replace("\n", " / "),
    }
    return forms | ({"form decided from": source} if source else {})


def _availability(bench: registry.Benchmark, root: Path | None) -> str | None:
    """Why a benchmark cannot run (None when it can)."""
    if root is None:
        return (
            f"{bench.name}: not configured (set roots.{bench.name} in the run config or "
            f"{bench.env} to its published layout)"
        )
    if bench.root == "ingested" and not vqa.test_shards(root):
        return f"{bench.name}: no ingested test split under {root}; not evaluated"
    return None


def run_benchmarks(
    family: str,
    model_factory: Callable[[], TextModel],
    roots: Mapping[str, Path],
    out: Path,
    options: RunOptions,
    trained: MixtureConfig | None = None,
    names: Sequence[str] | None = None,
    form_source: str = "",
) -> FamilyRun:
    """The registered benchmarks of `family` (those in `names`, default all) into `out`:
    predictions and `scores.json`. `roots` maps a benchmark to its root (absent = not
    configured). No model is built when no benchmark can run; every selected benchmark that
    does not run says why in the notes. `trained` is the question form's mixture config and
    `form_source` where it came from (`forms.question_form`)."""
    benches = [b for b in registry.family(family) if names is None or b.name in names]
    notes = [n for b in benches if (n := _availability(b, roots.get(b.name)))]
    runnable = [b for b in benches if _availability(b, roots.get(b.name)) is None]
    with atomic_directory(out) as staging:
        summaries: dict[str, dict[str, Any]] = {}
        writer = prediction_writer(staging)
        checkpoint = None
        with writer:
            if runnable:
                model = _build(model_factory, notes)
                checkpoint = model_checkpoint(model)
            for bench in runnable:
                tally = TALLIES[family]()
                read = registry.ReadOptions(limit=options.limit, trained=trained)
                items = bench.reader(roots[bench.name], read)
                with Progress(f"eval {bench.name}", unit="items") as progress:
                    for item, scored in predict_and_score(
                        model, items, bench.scorer, writer, options.batch_size
                    ):
                        tally.add(item, scored)
                        progress.update()
                summaries[bench.name] = tally.summary()
                skipped = sorted(read.skips.items())
                notes += [f"{bench.name}: {n} rows skipped: {reason}" for reason, n in skipped]
        result = EvalResult(summaries, writer.shards, notes)
        run = _text_run(options.label, result, out)
        run.checkpoint = checkpoint
        payload = _scores_payload(
            run,
            "benchmarks",
            options,
            configured=sorted(roots),
            prompt_forms=prompt_forms(trained, form_source),
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
        checkpoint = None
        if first is None:
            notes.append(f"no held-out {split} generation pairs under {pairs_dir}")
            result = generation.GenerationResult({}, [], None)
        else:
            model = _build(model_factory, notes)
            checkpoint = model_checkpoint(model)
            result = generation.evaluate_generation(
                model,
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
            options.label,
            result.scores,
            notes,
            counts,
            out,
            result.shards,
            result.grid_png,
            checkpoint,
        )
        payload = _scores_payload(run, "columns", options, ssim_window=ssim_window)
        write_json(staging / SCORES_NAME, payload)
    return run


def run_report(eval_dir: Path) -> ReportRun:
    """`<eval_dir>/report.md` (and `report.png`, a picture of Table 1) from each family's
    `scores.json`, written atomically so a reader never sees half a report; a family never
    evaluated shows as empty cells with the reason."""
    scores = {f: report.read_scores(eval_dir / f / SCORES_NAME) for f in FAMILIES}
    markdown = report.render_report(scores["vqa"], scores["mcq"], scores["generation"])
    path = eval_dir / REPORT_NAME
    atomic_write_text(path, markdown)
    png = report.render_png(scores["vqa"], scores["mcq"])
    atomic_write_bytes(eval_dir / REPORT_PNG, png)
    record_evaluation(scores, path)  # the evaluated checkpoints' model cards
    return ReportRun(markdown, path, {f: scores[f] is not None for f in FAMILIES}, png)
