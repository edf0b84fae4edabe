"""The evaluation report: the paper's Tables 1, 2 and 3 (and 9) with this run's row added.

Published numbers come from `published.yaml` only (source cited there). This run's numbers
come from the `scores.json` each evaluation wrote. Every cell of this run shows its sample
size and 95% interval, and a warning mark where the interval is wider than the gap to the
paper's reference row (the difference is not resolved by this many questions); a cell this
run did not compute is "–" with the reason, never a guess. Output is Markdown, for a file and
for the Dagster UI, and a PNG of Table 1 (`render_png`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw

PUBLISHED = Path(__file__).with_name("published.yaml")
DASH = "–"

TABLE1_SOURCES = (("vqa", "vqa_rad"), ("vqa", "slake"), ("vqa", "pathvqa"))
TABLE2_COLUMNS = ("ct2mri_brain", "ct2mri_pelvis", "mri2ct_brain", "mri2ct_pelvis")
WARN = "⚠"
REFERENCE_ROW = "HealthGPT-M3"  # the paper's row this run is compared with (the reproduced size)


def load_published(path: Path = PUBLISHED) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def read_scores(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any, digits: int) -> str:
    return DASH if value is None else f"{float(value):.{digits}f}"


def empty(reason: str) -> str:
    """An empty cell of this run, with the reason it is empty."""
    return f"{DASH} ({reason})"


def run_cell(cell: dict[str, Any] | None, digits: int, paper: float | None, reason: str) -> str:
    """`value (n=N; low-high)`, with the warning mark when the 95% interval is wider than
    the gap to the paper's value; the reason when there is no value."""
    if cell is None:
        return empty(reason)
    value = cell["value"]
    if not cell.get("ci"):
        return f"{value:.{digits}f} (n={cell['n']}; no interval) {WARN}"
    low, high = cell["ci"]
    text = f"{value:.{digits}f} (n={cell['n']}; {low:.{digits}f}–{high:.{digits}f})"
    return text + (f" {WARN}" if paper is not None and high - low > abs(value - paper) else "")


def reference(spec: dict[str, Any]) -> list[float | None]:
    """The reference row's published values in a table (None where it has none)."""
    for row in spec["rows"]:
        if row["model"] == REFERENCE_ROW:
            return list(row["values"])
    return [None] * len(spec["columns"])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ours(*results: dict[str, Any] | None) -> str:
    """This run's row label, naming the model only when one of `results` evaluated something
    (a family that ran nothing makes no claim about a model)."""
    label = next((r.get("model") for r in results if r and _ran(r)), None)
    return f"**this run ({label})**" if label else "**this run**"


# ---------------------------------------------------------------------------- table 1

SCORER_LABELS = {"llava_med": "LLaVA-Med scorer", "strict": "strict scorer"}
PAPER_SCORER = "llava_med"
"""The convention of this run's Table 1 row that is compared with the paper. The paper gives no
scorer; its baselines' medical VQA numbers (LLaVA-Med, HuatuoGPT-Vision) come from LLaVA-Med's
evaluation code or ones copied from it, and only LLaVA-Med's looser rules (substring for
closed, recall with "none" read as 0 for open) are a scorer under which such published
numbers were produced; the strict scorer is shown beside it for a lower bound."""


def _reason(result: dict | None, name: str, family: str = "") -> str:
    """Why this run has no cell for benchmark `name`: its family did not run, the benchmark
    was not configured, its ingested test split is missing, or it ran nothing."""
    if result is None:
        return f"{family} not run".strip()
    notes = result.get("notes", [])
    if any(n.startswith(f"{name}: not configured") for n in notes):
        return "not configured"
    if any(n.startswith(f"{name}: no ingested test split") for n in notes):
        return "not ingested"
    return "not run"


def omvqa_columns(published: dict[str, Any], omni: dict[str, Any] | None) -> dict[str, Any]:
    """This run's OMVQA as the paper defines it: the mean of the seven Table 9 modality
    columns. A column with no modality in `modality_of_column` (FDM, see published.yaml) or
    that this run has no question for is missing; the mean is then over the columns present
    and `complete` is False: such a value is not comparable with the paper's."""
    spec = published["tables"]["table9"]
    mapping = spec.get("modality_of_column", {})
    by = (omni or {}).get("by_modality", {})
    columns = spec["columns"][:-1]
    present = {c: by[mapping[c]] for c in columns if mapping.get(c) in by and by[mapping[c]]}
    missing = [c for c in columns if c not in present]
    if not present:
        return {"value": None, "present": [], "missing": missing, "complete": False}
    return {
        **mean_of_cells(list(present.values())),
        "present": list(present),
        "missing": missing,
        "complete": not missing,
    }


def mean_of_cells(cells: list[dict[str, Any]], independent: bool = True) -> dict[str, Any]:
    """The mean of cells, their total n, and an approximate 95% interval: for independent
    cells (OMVQA's modality columns: disjoint questions) the half-widths combined in
    quadrature over the number of cells; otherwise (cells that share questions) their plain
    mean, which bounds the error of the mean whatever the cells' correlation."""
    value = sum(c["value"] for c in cells) / len(cells)
    halves = [(c["ci"][1] - c["ci"][0]) / 2 if c.get("ci") else None for c in cells]
    ci = None
    if all(h is not None for h in halves):
        combined = math.sqrt(sum(h * h for h in halves)) if independent else sum(halves)
        half = combined / len(cells)
        ci = [round(max(0.0, value - half), 2), round(min(100.0, value + half), 2)]
    return {"value": round(value, 2), "n": sum(c.get("n", 0) for c in cells), "ci": ci}


AVG_DISTINCT = (
    1,
    3,
    5,
    6,
    7,
)  # Table 1 cells whose questions are distinct: every "all", MMMU, OMVQA


def table1_average(cells: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Table 1's Avg.: the mean of the eight cells, when all eight exist. Its n counts
    distinct questions (a benchmark's closed questions are among its "all" ones) and its
    interval does not assume the cells independent (close and all share questions)."""
    if any(c is None for c in cells):
        return None
    average = mean_of_cells(cells, independent=False)  # type: ignore[arg-type]
    return {**average, "n": sum(cells[i]["n"] for i in AVG_DISTINCT)}  # type: ignore[index]


def table1_values(
    vqa: dict[str, Any] | None,
    mcq: dict[str, Any] | None,
    scorer: str = PAPER_SCORER,
    published: dict[str, Any] | None = None,
) -> list[dict[str, Any] | None]:
    """This run's Table 1 cells under one VQA scorer: close/all per VQA benchmark, MMMU-Med
    (accuracy over all 150 questions), OMVQA (mean of the paper's seven Table 9 columns), and
    the average of those eight (only when all eight were computed and OMVQA has all seven
    columns, as the paper's has)."""
    published = published or load_published()
    cells: list[dict[str, Any] | None] = []
    benchmarks = (vqa or {}).get("benchmarks", {})
    for _, name in TABLE1_SOURCES:
        result = benchmarks.get(name) or {}
        result = result.get(scorer) if scorer != "strict" else result
        cells += [(result or {}).get("close"), (result or {}).get("all")]
    choice = (mcq or {}).get("benchmarks", {})
    cells.append((choice.get("mmmu_med") or {}).get("accuracy"))
    omvqa = omvqa_columns(published, choice.get("omnimedvqa"))
    has_omvqa = omvqa["value"] is not None
    cells.append({k: omvqa[k] for k in ("value", "n", "ci")} if has_omvqa else None)
    cells.append(table1_average(cells) if omvqa["complete"] else None)
    return cells


def _table1_row(cells, paper, vqa, mcq, published) -> list[str]:
    reasons = []
    for _, name in TABLE1_SOURCES:
        reasons += [_reason(vqa, name, "VQA")] * 2
    omvqa = omvqa_columns(published, (mcq or {}).get("benchmarks", {}).get("omnimedvqa"))
    columns = len(omvqa["present"]) + len(omvqa["missing"])
    partial = f"OMVQA has {len(omvqa['present'])} of {columns} columns: not comparable"
    average_reason = partial if omvqa["value"] is not None and not omvqa["complete"] else ""
    reasons += [_reason(mcq, "mmmu_med"), _reason(mcq, "omnimedvqa")]
    reasons += [average_reason or "needs all 8"]
    paper = list(paper)
    if not omvqa["complete"]:
        paper[7] = paper[8] = None  # a partial OMVQA is not the paper's OMVQA
    out = [run_cell(c, 1, paper[i], r) for i, (c, r) in enumerate(zip(cells, reasons, strict=True))]
    if cells[7] is not None:
        out[7] += f" [{len(omvqa['present'])} of {columns} columns"
        out[7] += "]" if omvqa["complete"] else "; not comparable with the paper]"
    return out


def medical_mark(*results: dict[str, Any] | None) -> str:
    """Table 1's "Medical" column for this run: whether the evaluated model is a medical
    model (as the paper marks its rows), from what the run recorded: "✓" for a HealthGPT
    checkpoint or the official weights, "✗" for a model recorded as general, "?" when the
    run does not say (a model supplied from outside)."""
    marks = {r.get("medical") for r in results if r and _ran(r)}
    if marks == {True}:
        return "✓"
    if marks == {False}:
        return "✗"
    return "?"


def render_table1(published: dict[str, Any], vqa: dict | None, mcq: dict | None) -> str:
    spec = published["tables"]["table1"]
    header = ["Type", "Model", "# Params", "Medical", "VQA-RAD close", "VQA-RAD all"]
    header += ["SLAKE close", "SLAKE all", "PathVQA close", "PathVQA all", "MMMU-Med", "OMVQA"]
    header += ["Avg."]
    flagged = set(published["source"].get("inconsistent_rows", {}).get("table1", []))
    rows = []
    for row in spec["rows"]:
        name = row["model"] + (" †" if row["model"] in flagged else "")
        medical = "✓" if row.get("medical") else "✗"
        rows.append(
            [row["group"], name, row["params"], medical, *(_fmt(v, 1) for v in row["values"])]
        )
    paper = reference(spec)
    for scorer in (PAPER_SCORER, "strict"):
        cells = table1_values(vqa, mcq, scorer, published)
        name = f"{_ours(vqa, mcq)}, {SCORER_LABELS[scorer]}"
        medical = medical_mark(vqa, mcq)
        rows.append(["", name, DASH, medical, *_table1_row(cells, paper, vqa, mcq, published)])
    notes = [
        f"VQA cells are given under both scorers; the {SCORER_LABELS[PAPER_SCORER]} row is the "
        "one to compare with the paper: " + " ".join(PAPER_SCORER_WHY.split()),
    ]
    notes += _mcq_notes(published, mcq)
    if flagged:
        notes.append(
            "† as printed; in the source this row's Avg. is not the mean of its values "
            "(see published.yaml)."
        )
    return _section(spec["title"], _table(header, rows), notes)


PAPER_SCORER_WHY = (
    "the paper names no scorer, and its baselines' medical VQA numbers come from LLaVA-Med's "
    "evaluation code or copies of it (closed: the gold is a substring of the reply; open: "
    'token recall, "none" read as 0); the strict scorer is a lower bound beside it.'
)


def _mcq_notes(published: dict[str, Any], mcq: dict | None) -> list[str]:
    choice = (mcq or {}).get("benchmarks", {})
    notes = []
    mmmu = choice.get("mmmu_med")
    if mmmu:
        notes.append(
            f"MMMU-Med: {mmmu['n']} questions ({mmmu['n_open']} open, scored as MMMU's "
            f"official scorer does); {mmmu['random_choices']} unparsed replies got the official "
            "scorer's seeded random option."
            + (
                f" The paper's denominator is 150 questions; this run read {mmmu['n']}."
                if mmmu["n"] != MMMU_QUESTIONS
                else ""
            )
        )
    omni = choice.get("omnimedvqa")
    if omni:
        omvqa = omvqa_columns(published, omni)
        notes.append(
            "OMVQA is the mean of the paper's Table 9 modality columns "
            f"({', '.join(omvqa['present']) or 'none'} present; missing: "
            f"{', '.join(omvqa['missing']) or 'none'}; the paper does not expand FDM, so no "
            "modality is mapped to it and this run's OMVQA and Avg. are not compared with the "
            "paper's). "
            f"All-modality mean over every modality this run evaluated (not the paper's "
            f"definition): {_fmt(omni.get('macro_modality'), 1)}; accuracy over questions: "
            f"{run_cell(omni.get('accuracy'), 1, None, 'none')}; "
            f"unparsed replies: {omni['unparsed']}."
        )
    return notes


# ------------------------------------------------------------------------ tables 2, 3


def _generation_columns(generation: dict | None) -> dict[str, Any]:
    return (generation or {}).get("columns", {})


def _gen_reason(generation: dict | None, what: str) -> str:
    return "generation not run" if generation is None else f"no held-out {what} pairs"


def render_table2(published: dict[str, Any], generation: dict | None) -> str:
    spec = published["tables"]["table2"]
    names = {"ct2mri": "CT→MRI", "mri2ct": "MRI→CT"}
    header = ["Model"]
    for column in TABLE2_COLUMNS:
        task, region = column.split("_")
        header += [f"{names[task]} ({region}) {m}" for m in ("SSIM", "PSNR", "MSE")]
    rows = [[r["model"], *(_fmt(v, 2) for v in r["values"])] for r in spec["rows"]]
    ours, paper, values = _generation_columns(generation), reference(spec), []
    for index, column in enumerate(TABLE2_COLUMNS):
        result = ours.get(column) or {}
        for offset, metric in enumerate(("ssim", "psnr", "mse")):
            reason = _gen_reason(generation, column.replace("_", " "))
            values.append(run_cell(result.get(metric), 2, paper[3 * index + offset], reason))
    rows.append([_ours(generation), *values])
    return _section(spec["title"], _table(header, rows), [])


SR_SOURCE = "ixi"  # the paper's Table 3 is IXI 4x super-resolution
MMMU_QUESTIONS = 150  # 5 medical subjects x 30 validation questions: every baseline is k/150


def render_table3(published: dict[str, Any], generation: dict | None) -> str:
    spec = published["tables"]["table3"]
    header = ["Model", "SSIM", "PSNR", "MSE", "LPIPS"]
    rows = [[r["model"], *(_fmt(v, 2) for v in r["values"])] for r in spec["rows"]]
    sr = _generation_columns(generation).get("super_resolution") or {}
    result = (sr.get("by_source") or {}).get(SR_SOURCE) or {}
    paper, values = reference(spec), []
    for index, metric in enumerate(("ssim", "psnr", "mse", "lpips")):
        reason = _gen_reason(generation, "IXI super-resolution")
        if result and metric == "lpips" and not result.get("lpips"):
            reason = "LPIPS not computed"
        values.append(run_cell(result.get(metric), 2, paper[index], reason))
    rows.append([_ours(generation), *values])
    notes = ["This run's row: IXI pairs only, as the paper's; other sources are listed below."]
    notes += [n for n in (generation or {}).get("notes", []) if "LPIPS" in n]
    return _section(spec["title"], _table(header, rows), notes)


def render_other_generation(generation: dict | None) -> str:
    """Image results the paper's Tables 2-3 have no cell for: other tasks, and
    super-resolution from sources other than IXI."""
    rows = []
    for column, result in sorted(_generation_columns(generation).items()):
        for source, cells in sorted((result.get("by_source") or {}).items()):
            if column in TABLE2_COLUMNS or (column == "super_resolution" and source == SR_SOURCE):
                continue
            metrics = [run_cell(cells.get(m), 2, None, "not computed") for m in METRICS]
            rows.append([column, source, str(cells["n"]), *metrics])
    if not rows:
        return ""
    header = ["Task", "Source", "n", "SSIM", "PSNR", "MSE", "LPIPS"]
    title = "Other image results (no published counterpart; not comparable to Tables 2-3)"
    return _section(title, _table(header, rows), [])


METRICS = ("ssim", "psnr", "mse", "lpips")


# ---------------------------------------------------------------------------- table 9


def render_table9(published: dict[str, Any], mcq: dict | None) -> str:
    spec = published["tables"]["table9"]
    header = ["Model", *spec["columns"]]
    rows = [[r["model"], *(_fmt(v, 1) for v in r["values"])] for r in spec["rows"]]
    omni = ((mcq or {}).get("benchmarks") or {}).get("omnimedvqa")
    mapping, paper = spec.get("modality_of_column", {}), reference(spec)
    by = (omni or {}).get("by_modality", {})
    cells = []
    for index, column in enumerate(spec["columns"][:-1]):
        modality = mapping.get(column)
        if not omni:
            cells.append(empty(_reason(mcq, "omnimedvqa")))
        elif modality is None:
            cells.append(empty("not expanded in the paper"))
        else:
            cells.append(run_cell(by.get(modality), 1, paper[index], "no question"))
    omvqa = omvqa_columns(published, omni)
    average = {k: omvqa[k] for k in ("value", "n", "ci")} if omvqa["value"] is not None else None
    cells.append(run_cell(average, 1, paper[-1] if omvqa["complete"] else None, "no column"))
    if average is not None and not omvqa["complete"]:
        cells[-1] += " [not comparable with the paper: columns missing]"
    rows.append([_ours(mcq), *cells])
    return _section(spec["title"], _table(header, rows), [])


# ----------------------------------------------------------------------------- report


def _section(title: str, table: str, notes: Sequence[str]) -> str:
    text = f"### {title}\n\n{table}\n"
    return text + "".join(f"\n{note}\n" for note in notes)


def render_report(
    vqa: dict[str, Any] | None,
    mcq: dict[str, Any] | None,
    generation: dict[str, Any] | None,
    published: dict[str, Any] | None = None,
) -> str:
    """The full Markdown report; any of the three score sets may be missing."""
    published = published or load_published()
    parts = [
        "# HealthGPT evaluation: this run beside the paper",
        f"Published numbers: {published['source']['paper']} ({published['source']['url']}); "
        "transcription and caveats in `healthgpt/eval/published.yaml`.",
        _run_lines(vqa, mcq, generation),
        render_table1(published, vqa, mcq),
        render_table2(published, generation),
        render_table3(published, generation),
        render_other_generation(generation),
        render_table9(published, mcq),
        _notes(vqa, mcq, generation),
        _method(vqa, mcq, generation),
    ]
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def _ran(result: dict[str, Any]) -> bool:
    return bool(result.get("benchmarks") or result.get("columns"))


def _run_lines(*results: dict[str, Any] | None) -> str:
    """Which model each family evaluated; a family that evaluated nothing names no model."""
    lines = []
    for name, result in zip(
        ("comprehension (VQA)", "multiple choice", "generation"), results, strict=True
    ):
        if result is None:
            lines.append(f"- {name}: not run")
        elif not _ran(result):
            lines.append(f"- {name}: nothing evaluated (see the notes)")
        else:
            lines.append(f"- {name}: model `{result.get('model')}`, {result.get('summary', '')}")
    legend = (
        f"Cells of this run: value (n = questions or pairs; 95% interval); {WARN} = the "
        f"interval is wider than the gap to {REFERENCE_ROW}'s published value (or there is no "
        'interval), so this run\'s sample cannot tell the two apart; "–" is followed by the '
        "reason the cell is empty."
    )
    return "This run:\n" + "\n".join(lines) + "\n\n" + legend


def _notes(*results: dict[str, Any] | None) -> str:
    """Every family's notes, each once (a model-loading note is shared by families)."""
    notes = [n for r in results if r for n in r.get("notes", []) if "LPIPS" not in n]
    unique = list(dict.fromkeys(notes))
    return "### Notes\n\n" + "\n".join(f"- {n}" for n in unique) if unique else ""


def _method(vqa: dict | None, mcq: dict | None, generation: dict[str, Any] | None) -> str:
    """How this run's numbers were computed, in brief (details in the module docstrings)."""
    window = (generation or {}).get("ssim_window", "gaussian")
    window_text = {
        "gaussian": "11x11 Gaussian window, sigma 1.5 (Wang et al. 2004)",
        "uniform": "7x7 uniform window (scikit-image default)",
    }.get(window, window)
    forms = (vqa or mcq or {}).get("prompt_forms") or {}
    lines = [
        "Prompt forms: "
        + ("; ".join(f"{k}: {v}" for k, v in forms.items()) or "no text benchmark ran")
        + ". Greedy decoding; every reply is in `predictions-*.parquet` beside each "
        "`scores.json`, with both VQA scores.",
        "VQA, strict scorer: normalized exact match, else the first yes/no word, else the gold "
        "option named without the question's other options; open: recall of the gold's words. "
        "LLaVA-Med scorer: its normalization, closed = gold is a substring of the reply, open = "
        "its token recall. close = mean over closed questions, all = mean credit over all.",
        "Multiple choice: the last declared letter, else option text (negated mentions "
        "ignored), else the last standalone letter (articles ignored). MMMU: all questions of "
        "the 5 medical subjects "
        "(open ones by MMMU's `eval_open`), every image in order, unparsed replies get a seeded "
        "random option as in MMMU's scorer. OMVQA: mean of the paper's Table 9 columns.",
        f"Images: 8-bit grayscale (ITU-R 601 luma), 256x256, data range 255; SSIM with a "
        f"{window_text}, x100; PSNR per image (identical images capped at 100 dB) averaged; "
        "MSE on the 0-255 scale; LPIPS x100.",
        "Intervals: Wilson for accuracies, mean +- 1.96 standard errors for graded scores.",
    ]
    return "### Method\n\n" + "\n".join(f"- {line}" for line in lines)


# -------------------------------------------------------------------------------- PNG

BAR_W, GAP, PLOT_H, LEFT, TOP = 34, 22, 220, 40, 30


def render_png(vqa: dict[str, Any] | None, mcq: dict[str, Any] | None) -> bytes:
    """Table 1 as a picture: per column, this run (LLaVA-Med scorer) as a bar with its 95%
    interval, and the reference row's published value as a tick; empty columns say so."""
    published = load_published()
    spec = published["tables"]["table1"]
    labels = ["RAD c", "RAD a", "SLK c", "SLK a", "Path c", "Path a", "MMMU", "OMVQA", "Avg"]
    cells, paper = table1_values(vqa, mcq, PAPER_SCORER, published), reference(spec)
    width = LEFT + len(labels) * (BAR_W + GAP) + 20
    image = Image.new("RGB", (width, TOP + PLOT_H + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (LEFT, 8), f"Table 1: this run (bars, 95% CI) vs {REFERENCE_ROW} (ticks)", fill="black"
    )

    def y(value: float) -> float:
        return TOP + PLOT_H * (1 - value / 100.0)

    draw.line((LEFT - 4, TOP, LEFT - 4, TOP + PLOT_H), fill="gray")
    for index, (label, cell) in enumerate(zip(labels, cells, strict=True)):
        x = LEFT + index * (BAR_W + GAP)
        if cell is not None:
            draw.rectangle((x, y(cell["value"]), x + BAR_W, TOP + PLOT_H), fill=(90, 140, 200))
            if cell.get("ci"):
                low, high = cell["ci"]
                middle = x + BAR_W / 2
                draw.line((middle, y(low), middle, y(high)), fill="black", width=2)
        else:
            draw.text((x + 2, TOP + PLOT_H - 14), "n/a", fill="gray")
        if paper[index] is not None:
            draw.line((x - 3, y(paper[index]), x + BAR_W + 3, y(paper[index])), fill="red", width=2)
        draw.text((x, TOP + PLOT_H + 6), label, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
