"""End-of-stage validation on the held-out split: loss per task and closed-question accuracy.

Closed questions (yes/no, single choice) have a known chance level, so "accuracy clearly above
chance" is a cheap, honest signal that the model reads the image, which the training loss
alone does not show. The full benchmark suite lives in the evaluation group.

The model runs here under its own precision policy (`HealthGPT.autocast`), as in training, so a
bf16 base with fp32 trained parts evaluates as it trains. Held-out rows that do not fit
`max_length` are skipped and counted (`eval_dropped`), never scored on a cut answer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from healthgpt.data.shards import open_shard, resolve_images
from healthgpt.data.tasks import IMAGE_TOKEN
from healthgpt.model.constants import COMPREHENSION
from healthgpt.model.prompt import SampleDropped
from healthgpt.train.data import split_files
from healthgpt.train.model_api import ModelBundle


def held_out_files(subset_dir: Path) -> list[Path]:
    """The subset's own test shards, else the mixture's evaluation subset (`<mixture>/eval`)."""
    return split_files(subset_dir, "test") or split_files(subset_dir.parent / "eval", "test")


def held_out_rows(subset_dir: Path, limit: int, family: str | None = None) -> list[dict[str, Any]]:
    """The first `limit` held-out rows (of `family`), in shard order."""
    rows: list[dict[str, Any]] = []
    for path in held_out_files(subset_dir):
        parquet = open_shard(path)
        for group in range(parquet.metadata.num_row_groups):
            for row in resolve_images(parquet.read_row_group(group), path).to_pylist():
                if family is None or row["task_family"] == family:
                    rows.append(row)
                    if len(rows) >= limit:
                        return rows
    return rows


def normalize(answer: str) -> str:
    return answer.strip().strip(".").strip().lower()


def chance_level(row: dict[str, Any], reference: str, answers: set[str]) -> float:
    meta = json.loads(row.get("meta") or "{}")
    if meta.get("options"):
        return 1.0 / len(meta["options"])
    if normalize(reference) in ("yes", "no"):
        return 0.5
    return 1.0 / max(len(answers), 1)


@torch.no_grad()
def closed_accuracy(
    bundle: ModelBundle,
    rows: list[dict[str, Any]],
    max_new_tokens: int,
    device: torch.device,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Greedy answers to closed questions vs their references, and the chance level."""
    closed = [r for r in rows if r.get("answer_type") == "closed" and len(r["conversations"]) >= 2]
    if not closed:
        return {"closed_questions": 0}
    references = [r["conversations"][1]["value"] for r in closed]
    answers = {normalize(a) for a in references}
    bundle.model.eval()
    predictions = [
        answer
        for start in range(0, len(closed), batch_size)
        for answer in bundle.answers(closed[start : start + batch_size], max_new_tokens, device)
    ]
    correct, chance, examples = 0, 0.0, []
    for row, reference, predicted in zip(closed, references, predictions, strict=True):
        hit = normalize(predicted) == normalize(reference)
        correct += hit
        chance += chance_level(row, reference, answers)
        if len(examples) < 8:
            question = row["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()
            examples.append(
                {"question": question[:80], "answer": reference, "predicted": predicted}
            )
    return {
        "closed_questions": len(closed),
        "closed_accuracy": correct / len(closed),
        "closed_chance": chance / len(closed),
        "closed_examples": examples,
    }


@torch.no_grad()
def task_losses(
    bundle: ModelBundle,
    rows: list[dict[str, Any]],
    device: torch.device,
    dropped: dict[str, int] | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean over held-out rows of each row's own loss, per task (`batch_size` rows a pass).

    Rows that do not fit `max_length` are skipped; their reasons are counted into `dropped`."""
    bundle.add_target_codes(rows)
    encode, collate = bundle.encoder(), bundle.collator()
    kept: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        try:
            kept.append((row["task"], encode(row)))
        except SampleDropped as error:
            if dropped is not None:
                dropped[error.reason] = dropped.get(error.reason, 0) + 1
    losses: dict[str, list[float]] = defaultdict(list)
    bundle.model.eval()
    for start in range(0, len(kept), batch_size):
        chunk = kept[start : start + batch_size]
        batch = bundle.prepare(collate([sample for _, sample in chunk]), device)
        for (task, _), loss in zip(chunk, bundle.row_losses(batch).tolist(), strict=True):
            losses[task].append(loss)
    return {task: float(np.mean(values)) for task, values in sorted(losses.items())}


def validate(bundle: ModelBundle, config: Any, subset_dir: Path, device: torch.device) -> dict:
    """Held-out metrics of a finished stage (rank 0 only; small by `config.eval_samples`)."""
    rows = held_out_rows(subset_dir, config.eval_samples * 4)
    rows = [r for r in rows if r["task_family"] in config.families][: config.eval_samples]
    metrics: dict[str, Any] = {"eval_rows": len(rows)}
    if not rows:
        return metrics
    dropped: dict[str, int] = {}
    batch = config.micro_batch
    metrics["eval_loss_per_task"] = task_losses(bundle, rows, device, dropped, batch)
    metrics["eval_dropped"] = dropped
    if COMPREHENSION in config.families:
        comprehension = held_out_rows(subset_dir, config.eval_samples, COMPREHENSION)
        metrics.update(closed_accuracy(bundle, comprehension, config.max_new_tokens, device, batch))
    bundle.model.train()
    return metrics
