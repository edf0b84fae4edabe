"""Which question form the evaluated model is asked in, and where that choice came from.

A closed VQA question is asked the way the model was trained on it (`vqa.trained_form`), so
the evaluation needs the mixture config of the evaluated model, not merely the mixture that
happens to be on disk:

- official HealthGPT weights: the official form (plain questions, as the HealthGPT release
  evaluates its models), whatever mixture is on disk;
- a checkpoint trained by the pipeline: its `state.json` records the fingerprint of the
  mixture subset it was trained on (`healthgpt.train.run.subset_fingerprint`); when the
  mixture on disk has that fingerprint, its config is the trained one;
- otherwise (no record, or the mixture changed since) the on-disk mixture's config, else the
  configured preset, and the report says the form is not known from the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.shards import MANIFEST_NAME

STATE_FILE = "state.json"  # what a training stage writes beside its weights


@dataclass(frozen=True)
class QuestionForm:
    """The mixture config to render questions with (None: plain questions) and why."""

    trained: MixtureConfig | None
    source: str


def checkpoint_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """The training state recorded beside a checkpoint (a directory or its weights file)."""
    path = Path(checkpoint)
    state = (path if path.is_dir() else path.parent) / STATE_FILE
    return json.loads(state.read_text()) if state.is_file() else None


def mixture_config(mixture_dir: Path) -> MixtureConfig | None:
    """The config the mixture on disk was built with (its manifest's), if recorded."""
    manifest = Path(mixture_dir) / MANIFEST_NAME
    if not manifest.is_file():
        return None
    config = json.loads(manifest.read_text()).get("config")
    return MixtureConfig(**config) if config else None


def question_form(
    official: bool,
    checkpoint: str | Path | None,
    mixture_dir: Path,
    preset: Callable[[], MixtureConfig],
) -> QuestionForm:
    """The question form for the evaluated model, by the rules in the module docstring."""
    if official:
        return QuestionForm(None, "official weights: the official form (plain questions)")
    on_disk = mixture_config(mixture_dir)
    state = checkpoint_state(checkpoint) if checkpoint else None
    recorded = ((state or {}).get("inputs") or {}).get("subset")
    subset = ((state or {}).get("config") or {}).get("subset")
    if recorded and subset and on_disk is not None:
        from healthgpt.train.run import subset_fingerprint  # torch: only when a record exists

        if subset_fingerprint(Path(mixture_dir) / subset) == recorded:
            return QuestionForm(on_disk, "the mixture the checkpoint was trained on")
    why = "the checkpoint's mixture is no longer on disk" if recorded else "no training record"
    if on_disk is not None:
        return QuestionForm(on_disk, f"the mixture on disk ({why}: may not be the trained form)")
    return QuestionForm(preset(), f"the preset's config ({why}, no mixture on disk)")
