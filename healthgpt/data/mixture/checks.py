"""Checks on a built mixture, as plain functions returning (passed, details).

The pipeline wires them as Dagster asset checks. They read the written shards, not the
builder's memory, so they verify what a trainer will actually get:

- `check_no_leakage`: no training image is an image of the evaluation splits the build
  decontaminates against (`eval_splits`; exact or near-duplicate, recomputed from the pixels;
  for `decontaminate_by_question` sources, with the same question) and no held-out subject
  appears in training.
- `check_ratios`: per (stage, source, task), the rows match what the config asks for, from
  the available counts recorded in the manifest, within a tolerance.
- `check_tasks_present`: every task the config asks of a stage is in it.
- `check_images_present`: no sample lacks an image (or a target image) that its task needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.mixture.dedup import ImageHasher, PhashIndex
from healthgpt.data.mixture.pixels import ImageHash
from healthgpt.data.mixture.sampling import group_target, plan_stage, plan_stage2
from healthgpt.data.mixture.tasks import meta_of, question_key
from healthgpt.data.shards import open_shard, read_manifest, resolve_images, shard_paths
from healthgpt.data.tasks import NEEDS_IMAGE, NEEDS_TARGET, STAGE1, STAGE2, STAGE3, STAGES

TRAIN_SUBSETS = STAGES
MAX_EXAMPLES = 20


def _shards(mixture: Path, subset: str) -> list[Path]:
    return shard_paths(mixture, f"{subset}/data/")


def _batches(mixture: Path, subsets, columns: list[str]) -> Iterator[tuple[str, list[dict]]]:
    for subset in subsets:
        for path in _shards(mixture, subset):
            parquet = open_shard(path)
            for batch in parquet.iter_batches(batch_size=256, columns=columns, use_threads=False):
                yield subset, resolve_images(batch, path).to_pylist()


def _group_rows(mixture: Path, subset: str) -> Counter:
    counts: Counter = Counter()
    for path in _shards(mixture, subset):
        table = open_shard(path).read(columns=["source", "task"])
        for source, task in zip(
            table["source"].to_pylist(), table["task"].to_pylist(), strict=True
        ):
            counts[(source, task)] += 1
    return counts


@dataclass
class _Evaluation:
    """The eval subset as the leak check compares against it: each distinct image (by exact
    key) with the first sample showing it and the questions asked about it, and the held-out
    subjects."""

    keys: dict[str, int] = field(default_factory=dict)  # image key -> image number
    ids: list[str] = field(default_factory=list)  # image number -> first eval sample
    phashes: list[int] = field(default_factory=list)
    questions: list[dict[int, str]] = field(default_factory=list)  # question key -> sample
    subjects: dict[tuple[str, str], str] = field(default_factory=dict)

    def add_image(self, key: str, phash: int, sample: str, question: int | None) -> None:
        if key not in self.keys:
            self.keys[key] = len(self.ids)
            self.ids.append(sample)
            self.phashes.append(phash)
            self.questions.append({})
        if question is not None:
            self.questions[self.keys[key]].setdefault(question, sample)

    def match(self, numbers: list[int], question: int | None) -> str | None:
        """The eval sample matched among the images `numbers`: the first one's, or with a
        `question`, the first one asking it."""
        for number in numbers:
            if question is None:
                return self.ids[number]
            if question in self.questions[number]:
                return self.questions[number][question]
        return None


def _question_of(row: dict[str, Any]) -> int | None:
    """The `question_key` of a VQA sample's question (kept in its `meta`), else None."""
    question = meta_of(row).get("question")
    return question_key(question) if question else None


def _images(row: dict[str, Any], hasher: ImageHasher) -> Iterator[ImageHash]:
    for column in ("image", "target_image"):
        if row[column] and row[column]["bytes"]:
            yield hasher(row[column]["bytes"])


def check_no_leakage(mixture: Path, near_dup_hamming: int | None = None) -> tuple[bool, dict]:
    """No training sample shares an image or a held-out subject with the eval subset's
    `eval_splits` samples.

    The rule is the build's: the evaluation samples are those of `eval_splits` (validation
    rows sit in the eval subset too, but the build does not decontaminate against them), and a
    question of a `decontaminate_by_question` source leaks only when an evaluation sample on
    that image (exact or near-duplicate) asks the same question.
    """
    manifest = read_manifest(mixture)
    config = manifest.get("config", {})
    threshold = config.get("near_dup_hamming", 4) if near_dup_hamming is None else near_dup_hamming
    subject_sources = set(config.get("subject_split_sources", []))
    by_question = set(config.get("decontaminate_by_question", []))
    eval_splits = set(config.get("eval_splits", ["test"]))
    hasher = ImageHasher()
    evaluation = _Evaluation()
    columns = ["id", "source", "split", "subject_id", "image", "target_image", "meta"]
    for _, rows in _batches(mixture, ("eval",), columns):
        for row in rows:
            if row["split"] not in eval_splits:
                continue
            question = _question_of(row)
            for hashed in _images(row, hasher):
                evaluation.add_image(hashed.key, hashed.phash, row["id"], question)
            if row["source"] in subject_sources and row["subject_id"]:
                evaluation.subjects.setdefault((row["source"], row["subject_id"]), row["id"])
    index = PhashIndex(evaluation.phashes, threshold)
    leaks: Counter = Counter()
    examples: list[dict[str, Any]] = []
    checked = 0
    for subset, rows in _batches(mixture, TRAIN_SUBSETS, columns):
        for row in rows:
            checked += 1
            question = _question_of(row) if row["source"] in by_question else None
            found = _leak_of(row, question, hasher, evaluation, index)
            if found:
                leaks[found[0]] += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(
                        {"subset": subset, "id": row["id"], "reason": found[0], "eval_id": found[1]}
                    )
    details = {
        "checked": checked,
        "eval_images": len(evaluation.ids),
        "leaks": dict(leaks),
        "examples": examples,
        "near_dup_hamming": threshold,
        "eval_splits": sorted(eval_splits),
        "by_question": sorted(by_question),
    }
    return not leaks, details


def _leak_of(
    row: dict[str, Any],
    question: int | None,
    hasher: ImageHasher,
    evaluation: _Evaluation,
    index: PhashIndex,
) -> tuple[str, str] | None:
    for hashed in _images(row, hasher):
        number = evaluation.keys.get(hashed.key)
        exact = evaluation.match([] if number is None else [number], question)
        if exact:
            return "exact_image", exact
        near = evaluation.match(index.query(hashed.phash), question)
        if near:
            return "near_duplicate_image", near
    subject = evaluation.subjects.get((row["source"], row["subject_id"]))
    if subject:
        return "held_out_subject", subject
    return None


def expected_rows(mixture: Path, config: MixtureConfig) -> dict[str, dict[tuple[str, str], int]]:
    """Rows per (stage, source, task) that `config` asks for, given the recorded availability."""
    manifest = read_manifest(mixture)
    available = {(a["source"], a["task"]): a["train_samples"] for a in manifest["available"]}
    expected: dict[str, dict[tuple[str, str], int]] = {}
    for stage in (STAGE1, STAGE3):
        expected[stage] = {
            (p.source, p.task): group_target(p.available, p.weight, p.cap)
            for p in plan_stage(config, stage, available)
        }
    stage1_distinct = {g: min(n, available[g]) for g, n in expected[STAGE1].items() if n > 0}
    expected[STAGE2] = {
        (p.source, p.task): p.target for p in plan_stage2(config.stage2_size, stage1_distinct)
    }
    return expected


def check_ratios(
    mixture: Path, config: MixtureConfig, tolerance: float = 0.02
) -> tuple[bool, dict]:
    """Each (stage, source, task) group has the rows the config's weights and caps ask for.

    A group passes when |rows - expected| <= max(1, tolerance x expected); groups the config
    excludes must be empty. Shares of each stage are reported too.
    """
    expected = expected_rows(mixture, config)
    failures: list[dict[str, Any]] = []
    shares: dict[str, dict[str, float]] = {}
    for stage in TRAIN_SUBSETS:
        actual = _group_rows(mixture, stage)
        total = sum(actual.values()) or 1
        shares[stage] = {f"{s}/{t}": round(n / total, 4) for (s, t), n in sorted(actual.items())}
        for group in sorted(set(actual) | set(expected[stage])):
            want, got = expected[stage].get(group, 0), actual.get(group, 0)
            if abs(got - want) > max(1.0, tolerance * want) or (want == 0 and got > 0):
                failures.append(
                    {
                        "stage": stage,
                        "group": f"{group[0]}/{group[1]}",
                        "expected": want,
                        "actual": got,
                    }
                )
    return not failures, {"failures": failures, "shares": shares, "tolerance": tolerance}


def check_tasks_present(mixture: Path, config: MixtureConfig) -> tuple[bool, dict]:
    """Every task the config asks of stage 1 and stage 3 has at least one sample there.

    For a missing task the details say why: how many training candidates the inputs gave
    (none: no source for it) and how many of them decontamination or dedup removed.
    """
    manifest = read_manifest(mixture)
    missing: dict[str, list[str]] = {}
    present: dict[str, list[str]] = {}
    for stage, tasks in config.required_tasks().items():
        have = {task for _, task in _group_rows(mixture, stage)}
        present[stage] = sorted(have)
        absent = [t for t in tasks if t not in have]
        if absent:
            missing[stage] = absent
    why = {}
    for task in sorted({t for tasks in missing.values() for t in tasks}):
        why[task] = {
            "train_candidates": sum(
                c["len"]
                for c in manifest.get("candidates", [])
                if c["task"] == task and c["split"] == "train"
            ),
            "removed": {
                r["reason"]: r["len"]
                for r in manifest.get("removed_by_task", [])
                if r["task"] == task
            },
        }
    return not missing, {"missing": missing, "present": present, "why": why}


def check_images_present(mixture: Path) -> tuple[bool, dict]:
    """No sample lacks the input image or the target image its task requires."""
    problems: Counter = Counter()
    examples: list[dict[str, str]] = []
    checked = 0
    for subset in (*TRAIN_SUBSETS, "eval"):
        for path in _shards(mixture, subset):
            parquet = open_shard(path)
            for batch in parquet.iter_batches(
                batch_size=1024, columns=["id", "task", "image", "target_image"]
            ):
                batch = resolve_images(batch, path)
                checked += batch.num_rows
                tasks = batch.column("task").to_pylist()
                missing = {c: _missing(batch.column(c)) for c in ("image", "target_image")}
                for row, task in enumerate(tasks):
                    for column, needed in (("image", NEEDS_IMAGE), ("target_image", NEEDS_TARGET)):
                        if task in needed and missing[column][row]:
                            problems[f"{task}:{column}"] += 1
                            if len(examples) < MAX_EXAMPLES:
                                examples.append(
                                    {
                                        "subset": subset,
                                        "task": task,
                                        "column": column,
                                        "id": batch.column("id")[row].as_py(),
                                    }
                                )
    return not problems, {"checked": checked, "missing": dict(problems), "examples": examples}


def _missing(column) -> list[bool]:
    data = pc.struct_field(column, "bytes")
    empty = pc.or_kleene(pc.is_null(column), pc.is_null(data))
    short = pc.fill_null(pc.equal(pc.binary_length(data), 0), True)
    return pc.or_(pc.fill_null(empty, True), short).to_pylist()
