"""The mixture's dataset card (README.md beside the shards), composition table and chart.

The card is what a reader of the data sees first, so it says what is inside (counts by
subset, source, task, modality, split), under which licenses, and exactly how it was built
(the degradation, the dedup and decontamination rules, the held-out split, the sampler).
It is rendered from the summary only (no timings), so identical builds give identical cards.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from healthgpt.data.ingest.run import IncompleteSource, ingested_parts
from healthgpt.data.mixture.records import IngestedSource, MixtureSummary
from healthgpt.data.mixture.tasks import DEGRADATION
from healthgpt.data.shards import read_manifest
from healthgpt.data.tasks import (
    FAMILIES,
    IMAGE_TOKEN,
    STAGE1,
    STAGE3,
    STAGE_ROLES,
    STAGES,
    SUBSETS,
    TARGET_IMAGE_TOKEN,
    TASK_FAMILIES,
    TASKS,
)
from healthgpt.paths import MANIFESTS_DIR

if TYPE_CHECKING:
    from healthgpt.data.mixture.config import MixtureConfig

SUBSET_ROLES = STAGE_ROLES

# The VL-Health totals the paper reports (arXiv 2502.09838), per task family. Per-dataset
# figures come from the `paper:` block of each `data_manifests/<name>.yaml`.
PAPER_TOTALS: dict[str, int] = {"comprehension": 765_802, "generation": 783_045}
PAPER_REFERENCE = "HealthGPT, arXiv 2502.09838"


def manifests_dir(configured: str | None) -> Path:
    """`data_manifests/` of the checkout unless the config names another."""
    if configured:
        return Path(configured)
    return MANIFESTS_DIR


def read_licenses(
    ingested: Mapping[str, Path | IngestedSource], directory: Path
) -> dict[str, str | None]:
    """The `license` field of `data_manifests/<name>.yaml` per dataset (None when absent).

    Falls back to the reader's source name (from the ingestion manifest, already read when
    the dataset is given as an `IngestedSource`) when the dataset was given another name.
    Missing or unreadable manifests are tolerated: the card says so.
    """
    licenses: dict[str, str | None] = {}
    for name in sorted(ingested):
        value = ingested[name]
        source = value.reader_source if isinstance(value, IngestedSource) else _reader_source(value)
        candidates = [name]
        if source and source != name:
            candidates.append(source)
        licenses[name] = None
        for candidate in candidates:
            license_ = _license_of(directory / f"{candidate}.yaml")
            if license_:
                licenses[name] = license_
                break
    return licenses


def _reader_source(ingested_dir: Path) -> str | None:
    try:
        first = ingested_parts(ingested_dir, complete=False)[0]
        return read_manifest(first).get("summary", {}).get("source")
    except (FileNotFoundError, ValueError, IncompleteSource):
        return None


def _manifest(path: Path) -> dict[str, Any] | None:
    """A registry YAML as a mapping; None when missing or unreadable (the card says so)."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError):
        return None
    return data if isinstance(data, dict) else None


def read_paper(directory: Path) -> dict[str, dict[str, Any]]:
    """The `paper:` block of every registry YAML in `directory` that has one, normalized:
    `family` and `stages` as lists, `samples` an int or None, `note` a string."""
    paths = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        block = (_manifest(path) or {}).get("paper")
        if not isinstance(block, dict):
            continue
        family = block.get("family") or []
        stages = block.get("stages") or []
        samples = block.get("samples")
        found[path.stem] = {
            "family": [family] if isinstance(family, str) else [str(f) for f in family],
            "stages": [stages] if isinstance(stages, str) else [str(s) for s in stages],
            "samples": int(samples) if isinstance(samples, int | float) else None,
            "note": str(block.get("note") or ""),
        }
    return found


def _license_of(path: Path) -> str | None:
    data = _manifest(path)
    if not data or not data.get("license"):
        return None
    value = data["license"]
    if isinstance(value, dict):
        value = value.get("name") or value.get("id") or json.dumps(value, sort_keys=True)
    return str(value)


def _task_counts(summary: MixtureSummary, subset: str) -> dict[str, int]:
    return summary.counts.get(subset, {}).get("task", {})


def composition_markdown(summary: MixtureSummary) -> str:
    """Tasks (rows) by subset (columns), with family and totals."""
    subsets = [s for s in SUBSETS if summary.rows(s)]
    header = "| task | family | " + " | ".join(subsets) + " |"
    lines = [header, "|" + "---|" * (len(subsets) + 2)]
    for task in TASKS:
        counts = [_task_counts(summary, s).get(task, 0) for s in subsets]
        if any(counts):
            cells = " | ".join(f"{c:,}" for c in counts)
            lines.append(f"| {task} | {TASK_FAMILIES[task]} | {cells} |")
    totals = " | ".join(f"**{summary.rows(s):,}**" for s in subsets)
    lines.append(f"| **total** | | {totals} |")
    return "\n".join(lines)


def _fmt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _training_groups(summary: MixtureSummary) -> dict[tuple[str, str], int]:
    """Distinct training samples per (source, task): stage 2 is drawn from stage 1, so a group
    counts its stage 1 and stage 3 draws, at most all it has available."""
    drawn: dict[tuple[str, str], int] = {}
    available: dict[tuple[str, str], int] = {}
    for plan in summary.plan:
        if plan["stage"] in (STAGE1, STAGE3):
            group = (plan["source"], plan["task"])
            drawn[group] = drawn.get(group, 0) + min(plan["target"], plan["available"])
            available[group] = plan["available"]
    return {group: min(n, available[group]) for group, n in drawn.items() if n}


def paper_comparison_markdown(summary: MixtureSummary, paper: dict[str, dict[str, Any]]) -> str:
    """This build's composition per stage, family and source beside the paper's VL-Health."""
    family_rows = ["| family | " + " | ".join(STAGES) + " | this build | paper |"]
    family_rows.append("|" + "---|" * (len(STAGES) + 3))
    groups = _training_groups(summary)
    built: dict[str, int] = dict.fromkeys(FAMILIES, 0)
    for (_, task), n in groups.items():
        built[TASK_FAMILIES[task]] += n
    for family in FAMILIES:
        cells = [
            sum(n for t, n in _task_counts(summary, s).items() if TASK_FAMILIES[t] == family)
            for s in STAGES
        ]
        family_rows.append(
            f"| {family} | "
            + " | ".join(f"{c:,}" for c in cells)
            + f" | {built[family]:,} | {PAPER_TOTALS[family]:,} |"
        )
    totals = [summary.rows(s) for s in STAGES]
    family_rows.append(
        "| **total** | "
        + " | ".join(f"{c:,}" for c in totals)
        + f" | {sum(built.values()):,} | {sum(PAPER_TOTALS.values()):,} |"
    )
    stages_of: dict[str, set[str]] = {}
    families_of: dict[str, set[str]] = {}
    per_source: dict[str, int] = {}
    for plan in summary.plan:
        if plan["target"]:
            stages_of.setdefault(plan["source"], set()).add(plan["stage"])
            families_of.setdefault(plan["source"], set()).add(TASK_FAMILIES[plan["task"]])
    for (source, _), n in groups.items():
        per_source[source] = per_source.get(source, 0) + n
    source_rows = [
        "| dataset | family | stages | this build | paper: family | paper: stages | paper "
        "| paper note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(set(stages_of) | set(paper)):
        stated = paper.get(name)
        ours = [
            ", ".join(sorted(families_of.get(name, ()))) or "-",
            ", ".join(sorted(stages_of.get(name, ()))) or "-",
            _fmt(per_source.get(name, 0)),
        ]
        theirs = (
            [
                ", ".join(stated["family"]) or "-",
                ", ".join(stated["stages"]) or "-",
                _fmt(stated["samples"]) if stated["samples"] is not None else "not stated",
                stated["note"] or "-",
            ]
            if stated
            else ["-", "-", "no `paper:` entry", "-"]
        )
        source_rows.append(f"| {name} | " + " | ".join(ours + theirs) + " |")
    return (
        f"The paper ({PAPER_REFERENCE}) reports VL-Health as {PAPER_TOTALS['comprehension']:,} "
        f"comprehension and {PAPER_TOTALS['generation']:,} generation samples. This build's "
        "training samples per family (stage 1 and stage 3, each sample once: stage 2 is "
        "drawn from stage 1):\n\n"
        + "\n".join(family_rows)
        + "\n\nPer dataset (the paper's side from the `paper:` block of "
        '`data_manifests/<name>.yaml`; "not stated" where the paper gives no per-dataset '
        "figure):\n\n" + "\n".join(source_rows)
    )


def beside_the_paper(summary: MixtureSummary, config: MixtureConfig) -> str:
    """The card's "Beside the paper" section, with the `paper:` blocks of the registry folder
    `config` names: one text for the card and the mixture asset's metadata alike."""
    return paper_comparison_markdown(summary, read_paper(manifests_dir(config.manifests_dir)))


def _dimension_table(summary: MixtureSummary, dimension: str) -> str:
    subsets = [s for s in SUBSETS if summary.rows(s)]
    values = sorted({v for s in subsets for v in summary.counts[s].get(dimension, {})})
    lines = [f"| {dimension} | " + " | ".join(subsets) + " |", "|" + "---|" * (len(subsets) + 1)]
    for value in values:
        cells = " | ".join(f"{summary.counts[s][dimension].get(value, 0):,}" for s in subsets)
        lines.append(f"| {value} | {cells} |")
    return "\n".join(lines)


# matplotlib's tab20 palette, so each task keeps the colour it had in earlier charts.
_TAB20 = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44),
    (152, 223, 138), (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213),
    (140, 86, 75), (196, 156, 148), (227, 119, 194), (247, 182, 210), (127, 127, 127),
    (199, 199, 199), (188, 189, 34), (219, 219, 141), (23, 190, 207), (158, 218, 229),
)  # fmt: skip


def _font(size: int):
    """PIL's scalable default font, or its fixed bitmap font where Pillow lacks FreeType."""
    from PIL import ImageFont, features

    return ImageFont.load_default(size=size if features.check("freetype2") else None)


def composition_chart_png(summary: MixtureSummary) -> bytes:
    """A stacked bar per subset, segments by task (fixed colours), as PNG bytes.

    Drawn with PIL: importing matplotlib costs about 1.5 s of CPU, as much as the rest of a
    small mixture build."""
    from PIL import Image, ImageDraw

    subsets = [s for s in SUBSETS if summary.rows(s)] or list(SUBSETS)
    tasks = [
        (index, task)
        for index, task in enumerate(TASKS)
        if any(_task_counts(summary, s).get(task, 0) for s in subsets)
    ]
    font, small = _font(13), _font(10)
    width, label_w, legend_w, bar_h, top = 800, 70, 170, 28, 36
    plot_w = width - label_w - legend_w - 20
    height = max(top + len(subsets) * (bar_h + 12) + 40, top + 16 * len(tasks) + 10)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, 8), "VL-Health mixture composition by task", "black", font, "ma")
    largest = max((summary.rows(s) for s in subsets), default=0) or 1
    for row, subset in enumerate(subsets):
        y = top + row * (bar_h + 12)
        draw.text((label_w - 6, y + bar_h // 2), subset, "black", font, "rm")
        x = float(label_w)
        for index, task in tasks:
            share = _task_counts(summary, subset).get(task, 0) / largest * plot_w
            if share > 0:
                draw.rectangle([x, y, x + share, y + bar_h], fill=_TAB20[index % len(_TAB20)])
                x += share
    axis_y = top + len(subsets) * (bar_h + 12)
    draw.line([label_w, axis_y, label_w + plot_w, axis_y], "black")
    for step in range(5):
        x = label_w + plot_w * step / 4
        draw.line([x, axis_y, x, axis_y + 4], "black")
        draw.text((x, axis_y + 6), f"{round(largest * step / 4):,}", "black", small, "ma")
    draw.text((label_w + plot_w / 2, axis_y + 22), "samples", "black", font, "ma")
    legend_x = width - legend_w
    for line, (index, task) in enumerate(tasks):
        y = top + line * 16
        draw.rectangle([legend_x, y, legend_x + 10, y + 10], fill=_TAB20[index % len(_TAB20)])
        draw.text((legend_x + 16, y + 5), task, "black", small, "lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _front_matter(summary: MixtureSummary) -> str:
    configs = []
    for subset in SUBSETS:
        splits = sorted(summary.counts.get(subset, {}).get("split", {}))
        if not splits:
            continue
        configs.append(
            {
                "config_name": subset,
                "data_files": [
                    {"split": split, "path": f"{subset}/data/{split}-*.parquet"} for split in splits
                ],
            }
        )
    licenses = sorted({v for v in summary.licenses.values() if v})
    meta: dict[str, Any] = {
        "license": "other",
        "license_details": "; ".join(licenses) if licenses else "see the Licenses section",
        "tags": ["medical", "vision-language", "healthgpt", "vl-health"],
        "task_categories": [
            "visual-question-answering",
            "image-to-text",
            "image-to-image",
            "text-to-image",
        ],
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def render_card(summary: MixtureSummary, config: MixtureConfig) -> str:
    """README.md for the mixture directory (Hugging Face dataset card format)."""
    subset_lines = [
        f"| {s} | {', '.join(sorted(summary.counts[s]['split']))} | {summary.rows(s):,} "
        f"| {SUBSET_ROLES[s]} |"
        for s in SUBSETS
        if summary.rows(s)
    ]
    removed = (
        "\n".join(f"| {r} | {n:,} |" for r, n in sorted(summary.removed.items())) or "| - | 0 |"
    )
    licenses = "\n".join(
        f"| {name} | {value or 'not stated (no data_manifests entry): check the publisher'} |"
        for name, value in sorted(summary.licenses.items())
    )
    plan = "\n".join(
        f"| {p['stage']} | {p['source']} | {p['task']} | {p['available']:,} | {p['weight']:g} "
        f"| {p['cap'] if p['cap'] is not None else '-'} | {p['target']:,} |"
        for p in summary.plan
    )
    sections = [
        _front_matter(summary),
        "# VL-Health mixture\n",
        "Training and evaluation data for HealthGPT (arXiv 2502.09838), rebuilt from the public "
        "sources by `healthgpt.data.mixture.build.build_mixture` from "
        f"{summary.records:,} canonical records ({summary.candidates:,} candidate samples).\n",
        "![composition](composition.png)\n",
        "## Subsets\n",
        "| subset | splits | rows | role |\n|---|---|---|---|\n" + "\n".join(subset_lines) + "\n",
        "Each image is stored once, in `images/data/` (`sha256`, `image`); in the subsets "
        '`image` and `target_image` hold a reference, `{"path": "sha256:<hex>"}`. '
        "`healthgpt.data.shards.resolve_images(table, shard_path)` puts the bytes back; with "
        "`datasets` it is a two-line join:\n\n"
        "```python\n"
        'images = load_dataset("parquet", data_dir="<this dir>/images/data", split="train")\n'
        'png = dict(zip(images["sha256"], images["image"]))  # then, for a row of a subset:\n'
        '# png[row["image"]["path"].removeprefix("sha256:")]["bytes"] is the PNG\n'
        "```\n",
        "## Composition by task\n",
        composition_markdown(summary) + "\n",
        "## Beside the paper\n",
        beside_the_paper(summary, config) + "\n",
        "## By source\n",
        _dimension_table(summary, "source") + "\n",
        "## By modality\n",
        _dimension_table(summary, "modality") + "\n",
        "## By split\n",
        _dimension_table(summary, "split") + "\n",
        "## Removed\n",
        "Every dropped record and removed sample is listed in `removed.parquet` with its reason "
        "and, for decontamination and dedup, the sample it matched.\n",
        "| reason | count |\n|---|---|\n" + removed + "\n",
        f"Candidates not drawn by the sampler (weights and caps): {summary.not_selected:,}.\n",
        "## Licenses\n",
        "Each source keeps its own license and terms of use; this mixture adds none. Credentialed "
        "sources (MIMIC-CXR) may only be shared with credentialed users under their data use "
        "agreement.\n",
        "| dataset | license |\n|---|---|\n" + licenses + "\n",
        "## How it was built\n",
        _how_built(config),
        "## Sampling plan\n",
        "| stage | source | task | available | weight | cap | target |\n"
        + "|---|---|---|---|---|---|---|\n"
        + plan
        + "\n",
        "## Configuration\n",
        "```json\n" + json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n```\n",
    ]
    return "\n".join(sections)


def _by_question(config: MixtureConfig) -> str:
    """The Decontamination bullet's last sentence: which sources match on the question too."""
    if not config.decontaminate_by_question:
        return " This removes, for example, VQA-RAD training questions asked about its test images."
    sources = ", ".join(config.decontaminate_by_question)
    return (
        f" For {sources}, a training question is removed only when an evaluation sample on "
        "that image also asks the same question (question text compared case- and "
        "space-insensitively, answer left out): their official training splits ask other "
        "questions about their test images, and those are kept. Their other samples match "
        "on the image alone."
    )


def _how_built(config: MixtureConfig) -> str:
    closed = {
        "plain": "closed questions are asked as they are",
        "choice": "closed questions are rendered as single-choice questions (yes/no, or the "
        "answer plus distractors from the same source and question type), as in the paper",
        "both": "closed questions appear both as they are and as single-choice questions",
    }[config.closed_question_style]
    return "\n".join(
        [
            f"- **Comprehension.** VQA: `{IMAGE_TOKEN}` + question -> answer; "
            f"{closed}; open questions stay open. Captions and reports become description "
            "tasks with a prompt chosen from a fixed list. LLaVA-style conversations pass "
            "through; samples with more than one image are dropped (`multi_image`).",
            "- **Generation.** The answer turn is the placeholder "
            f"`{TARGET_IMAGE_TOKEN}`; the image to generate is in `target_image`. Modality "
            "conversion from registered SynthRAD2023 pairs in both directions (CT->MRI, "
            f"MRI->CT); {config.sr_factor}x super-resolution whose input is the target "
            f"degraded by: {DEGRADATION.format(f=config.sr_factor)}; reconstruction (input = "
            "target); text-to-image from the findings and impression of chest X-ray reports.",
            "- **Prompts and options** are chosen with a seed derived from the config seed and "
            "the sample id, so every sample renders the same whatever the input order.",
            f"- **Held-out generation split.** For {', '.join(config.subject_split_sources)} the "
            "split is made by subject (fallback: the original volume), never by slice: a "
            "subject is in test when the hash of (salt, source, subject) falls below "
            f"{config.generation_test_fraction:g}. Other sources keep their official splits.",
            "- **Exact duplicates** share the 128-bit xxh3 hash of their decoded pixels "
            "(mode, size and raw bytes), so re-encoded copies are caught too. "
            "**Near-duplicates** have 64-bit "
            f"DCT perceptual hashes (imagehash.phash) within {config.near_dup_hamming} bits, "
            "found by LSH banding (no all-pairs comparison); only direct neighbours count (never "
            "chains), so adjacent slices of a volume do not merge into one.",
            f"- **Decontamination.** No training sample shares an image (input or target, exact "
            f"or near-duplicate) with any sample of the {', '.join(config.eval_splits)} split(s): "
            "such samples are removed (`eval_exact`, `eval_near_duplicate`)."
            + _by_question(config),
            "- **Dedup.** Among training samples, one with the same task, the same text "
            "content and the same images (exactly: `duplicate_exact`; as near-duplicates: "
            "`near_duplicate`) as an earlier one is removed. Many questions about one image "
            "are kept.",
            "- **Sampling.** Per stage and (source, task) group: `min(cap, round(available x "
            "weight))` samples, lowest seeded rank first (weights above 1 repeat samples, the "
            "copies' ids end in `-rN`). Stage 2 draws its size from stage 1 in proportion to "
            "the stage-1 groups.",
            "- **Order and determinism.** Rows follow the input order (datasets by name, shards "
            "by name, rows as stored); the same inputs and config give byte-identical shards.",
            "",
        ]
    )
