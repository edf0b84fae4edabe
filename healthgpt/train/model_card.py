"""The model card (README.md, Hugging Face format) beside every trained checkpoint.

A stage writes the card into its final directory when it saves it (`write_model_card`): the
base model, the stages trained so far (the stage that initialized this one, from its card,
then this one), the mixture it trained on (version = sha256 of the mixture's manifest, the
subset's fingerprint, its composition by task and by source from the manifest's counts), and
"not evaluated yet". The evaluation, when it writes its report, records the scores into the
card of the checkpoint each family evaluated (`record_evaluation`).

Everything the card says is kept in its YAML front matter (the Hub's `license`, `base_model`,
`tags`, `datasets`, and the project's own block under `healthgpt`), and the body is rendered
from it, so an update reads the front matter, changes one key and renders the card again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from healthgpt.data.shards import MANIFEST_NAME, read_manifest
from healthgpt.storage import atomic_write_text, file_sha256, output_path

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
WEIGHTS_NAME = "model.safetensors"
TAGS = ["medical", "vision-language", "healthgpt", "h-lora", "research-only"]
NOT_EVALUATED = "Not evaluated yet."
INTENDED_USE = (
    "Research on medical vision-language models: visual question answering about medical "
    "images and medical image generation (CT/MRI conversion, super-resolution, "
    "reconstruction, report-to-X-ray), reproducing and extending HealthGPT "
    "(arXiv 2502.09838)."
)
LIMITS = (
    "**Research only. Not for clinical use**: not a medical device, not validated for "
    "diagnosis, treatment or any decision about a patient. Answers can be wrong with "
    "confidence; generated images are synthetic and must never stand in for an acquired "
    "image. Quality is bounded by the mixture below (its sources, sizes and licenses) and by "
    "the evaluation, which covers only the benchmarks listed. Use it under the terms of every "
    "source dataset and of the base model."
)
_FAMILY_KEYS = {"vqa": "benchmarks", "mcq": "benchmarks", "generation": "columns"}


def base_model_name(preset: str) -> str:
    """What the preset's base LM is, as the card's `base_model` names it."""
    from healthgpt.model import get_preset

    lm = get_preset(preset).lm
    if lm.source == "hf":
        return str(lm.name_or_path)
    if lm.source == "gguf":
        return str(lm.name_or_path or f"{lm.gguf_package}/{lm.gguf_file}")
    return f"none (randomly initialized {lm.arch}, preset {preset})"


def mixture_record(subset_dir: Path, fingerprint: str) -> dict[str, Any]:
    """The mixture a stage trained on: version, subset (and the fingerprint the run key
    recorded) and its composition, from the mixture's manifest (`<mixture>/_manifest.json`);
    what is missing is said so."""
    subset_dir = output_path(subset_dir)
    mixture = subset_dir.parent
    record: dict[str, Any] = {
        "path": str(mixture),
        "subset": subset_dir.name,
        "subset_fingerprint": fingerprint,
    }
    try:
        manifest = read_manifest(mixture)
    except FileNotFoundError:
        record["version"] = f"unknown (no {MANIFEST_NAME} at {mixture})"
        return record
    record["version"] = file_sha256(mixture / MANIFEST_NAME)[:16]
    counts = ((manifest.get("summary") or {}).get("counts") or {}).get(subset_dir.name) or {}
    record["composition"] = {d: dict(counts.get(d) or {}) for d in ("task", "source", "split")}
    return record


def read_card(directory: Path) -> dict[str, Any] | None:
    """The front matter of the pipeline's card in `directory`, or None when there is none.

    A README.md that is not one (a Hugging Face download's own card: no `healthgpt` block,
    front matter that is not a mapping or not YAML) counts as none: it is left as it is,
    and a log line says so."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return None
    match = re.match(r"^---\n(.*?)\n---\n", path.read_text(), re.DOTALL)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        meta = None
    own = meta.get("healthgpt") if isinstance(meta, dict) else None
    stages = own.get("stages") if isinstance(own, dict) else None
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        log.info("%s is not a HealthGPT model card (no healthgpt block); left as it is", path)
        return None
    return meta


def write_model_card(
    final_dir: Path, state: Mapping[str, Any], subset_dir: Path, init_dir: Path | None
) -> Path:
    """Write the card of a stage's final checkpoint from the `state` it saved (its metrics,
    config and inputs; see `healthgpt.train.run`)."""
    metrics, config = state["metrics"], state["config"]
    stage, preset = str(config["stage"]), str(config["model_preset"])
    previous = read_card(init_dir) if init_dir else None
    stages = list(((previous or {}).get("healthgpt") or {}).get("stages") or [])
    if init_dir and not previous:
        stages.append(f"unknown (initialized from {init_dir}, which has no model card)")
    mixture = mixture_record(subset_dir, str(state["inputs"]["subset"]))
    sources = sorted((mixture.get("composition") or {}).get("source") or {})
    meta = {
        "license": "other",
        "license_name": "research-only",
        "base_model": base_model_name(preset),
        "tags": TAGS,
        "datasets": sources,
        "healthgpt": {
            "preset": preset,
            "stage": stage,
            "stages": [*stages, stage],
            "run_key": str(state["run_key"]),
            "steps": state["step"],
            "recipe": str(config["preset"]),
            "training": {k: metrics.get(k) for k in ("samples", "tokens", "device")},
            "mixture": mixture,
            "evaluation": None,
        },
    }
    return _write(final_dir, meta)


def record_evaluation(
    scores: Mapping[str, Mapping[str, Any] | None], report_path: Path
) -> list[Path]:
    """Record each family's scores (`scores.json` payloads by family) in the card of the
    checkpoint it evaluated (the payload's `checkpoint`: the file the evaluation loaded);
    return the cards updated. A model that is not a pipeline checkpoint with a card
    (official weights, a stub: no `checkpoint`) has no card to update."""
    by_dir: dict[Path, dict[str, Any]] = {}
    for family, payload in scores.items():
        directory = _evaluated_dir(payload)
        if directory is None or payload is None:
            continue
        by_dir.setdefault(directory, {})[family] = {
            "model": payload.get("model"),
            "results": _cells(payload.get(_FAMILY_KEYS.get(family, "benchmarks")) or {}),
        }
    updated = []
    for directory, families in by_dir.items():
        meta = read_card(directory)
        if meta is None:
            continue
        evaluation = dict(meta["healthgpt"].get("evaluation") or {})
        evaluation["report"] = str(report_path)
        evaluation["families"] = {**(evaluation.get("families") or {}), **families}
        meta["healthgpt"]["evaluation"] = evaluation
        updated.append(_write(directory, meta))
    return updated


def _evaluated_dir(payload: Mapping[str, Any] | None) -> Path | None:
    """The directory of the checkpoint a family evaluated (its card's place), if any."""
    checkpoint = (payload or {}).get("checkpoint")
    if not checkpoint:
        return None
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def _cells(table: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """benchmark -> metric -> value, for the cells that hold a value (x100 where scaled)."""
    out: dict[str, dict[str, float]] = {}
    for name, row in table.items():
        values = {
            metric: cell["value"]
            for metric, cell in (row or {}).items()
            if isinstance(cell, dict) and "value" in cell
        }
        if values:
            out[name] = {**values, "n": row.get("n")}
    return out


def _write(directory: Path, meta: dict[str, Any]) -> Path:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return Path(atomic_write_text(Path(directory) / CARD_NAME, f"---\n{front}---\n{render(meta)}"))


def md_text(value: Any) -> str:
    """`value` as inline Markdown text: on one line (any run of whitespace, newlines included,
    becomes one space, so a name cannot start a heading or a block) and with `|` escaped (so
    it stays inside its table cell)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def render(meta: Mapping[str, Any]) -> str:
    """The card's body from its front matter; every value from it goes through `md_text`."""
    own = {k: md_text(v) if isinstance(v, str) else v for k, v in meta["healthgpt"].items()}
    mixture = {k: md_text(v) if isinstance(v, str) else v for k, v in own["mixture"].items()}
    lines = [
        f"# HealthGPT checkpoint ({own['preset']}, {own['stage']})",
        "",
        "H-LoRA adapters, projectors and image-token embeddings trained by the HealthGPT "
        f"pipeline (`{WEIGHTS_NAME}`); use them with `healthgpt ask`, `healthgpt generate` "
        "or `healthgpt app`, given `--checkpoint` this directory.",
        "",
        "## Base model",
        "",
        f"`{md_text(meta['base_model'])}` (model preset `{own['preset']}`).",
        "",
        "## Training",
        "",
        f"Stages trained, in order: {', '.join(map(md_text, own['stages']))}. This checkpoint: "
        f"{own['stage']} ({own['recipe']} recipe), {own['steps']} steps, run key "
        f"`{own['run_key'][:16]}`.",
        "",
        "## Data",
        "",
        f"Mixture version `{mixture['version']}`, subset `{mixture['subset']}` "
        f"(fingerprint `{mixture['subset_fingerprint'][:16]}`).",
    ]
    for dimension in ("task", "source"):
        counts = (mixture.get("composition") or {}).get(dimension) or {}
        if counts:
            lines += ["", f"| {dimension} | samples |", "|---|---:|"]
            lines += [f"| {md_text(name)} | {md_text(n)} |" for name, n in sorted(counts.items())]
    lines += ["", "## Evaluation", ""]
    evaluation = own.get("evaluation")
    if not evaluation:
        lines.append(NOT_EVALUATED)
    else:
        lines.append(f"From the evaluation report `{md_text(evaluation['report'])}`.")
        for family, result in sorted(evaluation["families"].items()):
            lines += ["", f"### {md_text(family)}", ""]
            rows = result["results"]
            if not rows:
                lines.append("No scores (nothing of this family was evaluated).")
            for name, values in sorted(rows.items()):
                cells = ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in values.items())
                lines.append(f"- {md_text(name)}: {cells}")
    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Limits", "", LIMITS, ""]
    return "\n".join(lines)
