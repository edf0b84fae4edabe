"""The evaluation report: the paper's Tables 1, 2 and 3 (and 9) with this run's row added.

Published numbers come from `published.yaml` only (source cited there). This run's numbers
come from the `scores.json` each evaluation wrote; a cell this run did not compute is "–",
never a guess. Output is Markdown, for a file and for the Dagster UI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from healthgpt.eval.predict import TEMPLATES

PUBLISHED = Path(__file__).with_name("published.yaml")
DASH = "–"

TABLE1_SOURCES = (("vqa", "vqa_rad"), ("vqa", "slake"), ("vqa", "pathvqa"))
TABLE2_COLUMNS = ("ct2mri_brain", "ct2mri_pelvis", "mri2ct_brain", "mri2ct_pelvis")
TABLE9_OURS = {"CT": "CT", "X-ray": "X-Ray", "MiS": "Microscopy", "OCT": "OCT", "MRI": "MRI"}
TABLE9_OURS["USS"] = "Ultrasound"


def load_published(path: Path = PUBLISHED) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def read_scores(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any, digits: int) -> str:
    return DASH if value is None else f"{float(value):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ours(label: str | None) -> str:
    return f"**this run ({label})**" if label else "**this run**"


# ---------------------------------------------------------------------------- table 1


def table1_values(vqa: dict[str, Any] | None, mcq: dict[str, Any] | None) -> list[float | None]:
    """This run's Table 1 row: close/all per VQA benchmark, MMMU-Med (accuracy over
    questions), OMVQA (mean of per-modality accuracies, as the paper's is), and the average of
    those eight (only when all eight were computed, as the paper's "Avg." is)."""
    values: list[float | None] = []
    benchmarks = (vqa or {}).get("benchmarks", {})
    for _, name in TABLE1_SOURCES:
        result = benchmarks.get(name) or {}
        values += [result.get("close"), result.get("all")]
    choice = (mcq or {}).get("benchmarks", {})
    values.append((choice.get("mmmu_med") or {}).get("accuracy"))
    values.append((choice.get("omnimedvqa") or {}).get("macro_modality"))
    present = [v for v in values if v is not None]
    values.append(round(sum(present) / 8, 2) if len(present) == 8 else None)
    return values


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
    label = (vqa or mcq or {}).get("model")
    rows.append(["", _ours(label), DASH, "✓", *(_fmt(v, 1) for v in table1_values(vqa, mcq))])
    notes = []
    if flagged:
        notes.append(
            "† as printed; in the source this row's Avg. is not the mean of its values "
            "(see published.yaml)."
        )
    return _section(spec["title"], _table(header, rows), notes)


# ------------------------------------------------------------------------ tables 2, 3


def _generation_columns(generation: dict | None) -> dict[str, Any]:
    return (generation or {}).get("columns", {})


def render_table2(published: dict[str, Any], generation: dict | None) -> str:
    spec = published["tables"]["table2"]
    names = {"ct2mri": "CT→MRI", "mri2ct": "MRI→CT"}
    header = ["Model"]
    for column in TABLE2_COLUMNS:
        task, region = column.split("_")
        header += [f"{names[task]} ({region}) {m}" for m in ("SSIM", "PSNR", "MSE")]
    rows = [[r["model"], *(_fmt(v, 2) for v in r["values"])] for r in spec["rows"]]
    ours = _generation_columns(generation)
    values = []
    for column in TABLE2_COLUMNS:
        result = ours.get(column) or {}
        values += [_fmt(result.get(m), 2) for m in ("ssim", "psnr", "mse")]
    rows.append([_ours((generation or {}).get("model")), *values])
    return _section(spec["title"], _table(header, rows), _counts(ours, TABLE2_COLUMNS))


def render_table3(published: dict[str, Any], generation: dict | None) -> str:
    spec = published["tables"]["table3"]
    header = ["Model", "SSIM", "PSNR", "MSE", "LPIPS"]
    rows = [[r["model"], *(_fmt(v, 2) for v in r["values"])] for r in spec["rows"]]
    result = _generation_columns(generation).get("super_resolution") or {}
    values = [_fmt(result.get(m), 2) for m in ("ssim", "psnr", "mse", "lpips")]
    rows.append([_ours((generation or {}).get("model")), *values])
    notes = _counts(_generation_columns(generation), ["super_resolution"])
    notes += [n for n in (generation or {}).get("notes", []) if "LPIPS" in n]
    return _section(spec["title"], _table(header, rows), notes)


def render_other_generation(generation: dict | None) -> str:
    """Image tasks this run scored that the paper's Tables 2-3 have no column for."""
    known = {*TABLE2_COLUMNS, "super_resolution"}
    extra = {k: v for k, v in _generation_columns(generation).items() if k not in known}
    if not extra:
        return ""
    header = ["Task", "n", "SSIM", "PSNR", "MSE", "LPIPS"]
    rows = [
        [k, str(v["n"]), *(_fmt(v.get(m), 2) for m in ("ssim", "psnr", "mse", "lpips"))]
        for k, v in sorted(extra.items())
    ]
    return _section("Other image tasks (no published counterpart)", _table(header, rows), [])


# ---------------------------------------------------------------------------- table 9


def render_table9(published: dict[str, Any], mcq: dict | None) -> str:
    spec = published["tables"]["table9"]
    header = ["Model", *spec["columns"]]
    rows = [[r["model"], *(_fmt(v, 1) for v in r["values"])] for r in spec["rows"]]
    omni = ((mcq or {}).get("benchmarks") or {}).get("omnimedvqa")
    if omni:
        by = omni.get("by_modality", {})
        cells = []
        for column in spec["columns"][:-1]:
            modality = TABLE9_OURS.get(column)
            cells.append(_fmt((by.get(modality) or {}).get("accuracy"), 1) if modality else DASH)
        rows.append([_ours(mcq.get("model")), *cells, _fmt(omni.get("macro_modality"), 1)])
    notes = ["FDM is not expanded in the paper: this run's row leaves it empty."]
    if omni:
        notes.append(
            "This run's avg (and its OMVQA in Table 1) is the mean of its per-modality "
            "accuracies over every modality it evaluated, including those without a column "
            "here; per-modality counts and the accuracy over questions are in eval_mcq's "
            "metadata."
        )
    return _section(spec["title"], _table(header, rows), notes)


# ----------------------------------------------------------------------------- report


def _counts(columns: dict[str, Any], names: Sequence[str]) -> list[str]:
    parts = [f"{n}: {columns[n]['n']} pairs" for n in names if n in columns]
    return ["This run: " + ", ".join(parts) + "."] if parts else []


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
        _method(generation),
    ]
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def _run_lines(*results: dict[str, Any] | None) -> str:
    lines = []
    for name, result in zip(
        ("comprehension (VQA)", "multiple choice", "generation"), results, strict=True
    ):
        if result is None:
            lines.append(f"- {name}: not evaluated")
        else:
            lines.append(
                f"- {name}: model `{result.get('model')}`, {result.get('summary', '')}".rstrip(", ")
            )
    return "This run:\n" + "\n".join(lines)


def _notes(*results: dict[str, Any] | None) -> str:
    notes = [n for r in results if r for n in r.get("notes", []) if "LPIPS" not in n]
    return "### Notes\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def _method(generation: dict[str, Any] | None) -> str:
    """How this run's numbers were computed, in brief (details in the module docstrings)."""
    window = (generation or {}).get("ssim_window", "gaussian")
    window_text = {
        "gaussian": "11x11 Gaussian window, sigma 1.5 (Wang et al. 2004)",
        "uniform": "7x7 uniform window (scikit-image default)",
    }.get(window, window)
    vqa_prompt = TEMPLATES["vqa"].replace("\n", " / ")
    mcq_prompt = TEMPLATES["mcq"].replace("\n", " / ")
    lines = [
        "Answers and replies are normalized (case, punctuation, articles, number words; "
        "`healthgpt/eval/normalize.py`). Closed VQA: exact match, else the first yes/no word "
        "for yes/no questions, else the gold option named without the question's other "
        "options. Open VQA: recall of the gold's words. close = mean over closed questions, "
        "all = mean credit over all questions.",
        "Multiple choice: a declared or standalone letter, else the option's text; unparseable "
        "replies count as wrong and are flagged in the predictions table.",
        f"Images: 8-bit grayscale (ITU-R 601 luma), 256x256, data range 255; SSIM with a "
        f"{window_text}, x100; PSNR per image (identical images capped at 100 dB) averaged; "
        "MSE on the 0-255 scale; LPIPS x100.",
        f"Prompts: VQA `{vqa_prompt}`; multiple choice `{mcq_prompt}`. Greedy decoding. Every "
        "reply is in `predictions-*.parquet` beside each `scores.json`.",
    ]
    return "### Method\n\n" + "\n".join(f"- {line}" for line in lines)
