"""Multiple-choice benchmarks (MMMU medical subset, OmniMedVQA): readers and reply parsing.

Reply -> chosen option, first rule that applies (the rule is kept in the predictions table):

1. `explicit`: a letter the reply *declares*: "Answer: B", "the answer is (c)", "Option D",
   a reply that is just a letter in either case ("b", "(B)"), or one that starts with the
   capital letter followed by punctuation ("B.", "B) Pneumonia").
2. `letter`: the first standalone capital letter among the valid ones (A-D for four options):
   not inside a word, and not the article "A" ("A lesion ..." is not option A).
3. `text`: the reply equals one option's text after `normalize_answer`, or contains exactly
   one option's text as whole words (if it contains several, the longest one counts only when
   it contains all the others: "lung cancer" over "lung").
4. otherwise unparsed: counted wrong, and flagged (`parsed` is null, rule `unparsed`).

Published layouts read here:

- MMMU (HF `MMMU/MMMU`): `<root>/<Subject>/<split>-00000-of-00001.parquet` with columns id,
  question, options (a Python-list string), answer (letter), image_1..image_7 ({bytes, path}),
  img_type, question_type, subfield. The medical subset is the "Health & Medicine" discipline.
- OmniMedVQA: `<root>/QA information/Open-access/<dataset>.json`, each a list of {question_id,
  question_type, question, gt_answer, image_path, option_A..option_D, modality_type, dataset},
  `image_path` relative to `<root>` (`Images/<dataset>/...`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthgpt.data.decode.errors import LayoutError
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.shards import open_shard
from healthgpt.eval.normalize import contains_phrase, normalize_answer
from healthgpt.eval.predict import (
    LETTERS,
    EvalResult,
    TextItem,
    TextModel,
    predict_and_score,
    prediction_writer,
)

MMMU_MEDICAL_SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)
MCQ_BENCHMARKS = ("mmmu_med", "omnimedvqa")

# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Choice:
    """The option a reply chose (a letter, or None when unparseable) and the rule used."""

    letter: str | None
    rule: str


_EXPLICIT = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:option\s*)?[(\[]?([A-Ja-j])[)\]]?(?![A-Za-z])",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^\s*[(\[]?([A-J])(?:[)\].:,]|\s*$)")
_LEADING_PAREN = re.compile(r"^\s*[(\[]([A-Ja-j])[)\]]")
_ONLY = re.compile(r"^\s*[(\[]?([A-Ja-j])[)\].]?\s*$")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-J])(?![A-Za-z0-9])")


def parse_choice(reply: str, options: Sequence[str]) -> Choice:
    """The option letter a free-text reply chose, by the rules in the module docstring."""
    valid = LETTERS[: len(options)]
    text = str(reply or "")
    for pattern in (_ONLY, _LEADING, _LEADING_PAREN, _EXPLICIT):
        match = pattern.search(text)
        if match and match.group(1).upper() in valid:
            return Choice(match.group(1).upper(), "explicit")
    for match in _STANDALONE.finditer(text):
        letter = match.group(1)
        if letter not in valid:
            continue
        if letter == "A" and re.match(r"\s+[a-z]", text[match.end() :]):
            continue  # the article: "A lesion in ..."
        return Choice(letter, "letter")
    return _by_text(text, options)


def _by_text(text: str, options: Sequence[str]) -> Choice:
    reply = normalize_answer(text)
    normalized = [normalize_answer(o) for o in options]
    for index, option in enumerate(normalized):
        if option and reply == option:
            return Choice(LETTERS[index], "text")
    hits = [i for i, option in enumerate(normalized) if contains_phrase(reply, option)]
    if len(hits) == 1:
        return Choice(LETTERS[hits[0]], "text")
    if hits:
        longest = max(hits, key=lambda i: len(normalized[i]))
        if all(contains_phrase(normalized[longest], normalized[i]) for i in hits):
            return Choice(LETTERS[longest], "text")
    return Choice(None, "unparsed")


def score_choice(item: TextItem, reply: str) -> tuple[Choice, float]:
    choice = parse_choice(reply, item.options)
    return choice, float(choice.letter is not None and choice.letter == item.answer)


# ---------------------------------------------------------------------------- modality

# Benchmark modality labels -> the schema's modality names, first match wins. OmniMedVQA
# writes e.g. "CT(Computed Tomography)", "MR (Mag-netic Resonance Imaging)", "Fundus
# Photography", "Microscopy Images"; MMMU's img_type e.g. "['CT Scans']", "['Microscopic Images']".
_MODALITY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("OCT", r"\boct\b|optical coherence"),
        ("CT", r"\bct\b|computed tomograph"),
        ("MRI", r"\bmri?\b|magnetic|mag-netic"),
        ("X-Ray", r"x-?ray|radiograph"),
        ("Ultrasound", r"ultrasound|sonogra|\bus\b"),
        ("Fundus", r"fundus"),
        ("Dermoscopy", r"dermoscop|dermatoscop"),
        ("Microscopy", r"microscop"),
        ("Endoscopy", r"endoscop|colonoscop"),
        ("Pathology", r"patholog|histolog"),
    )
)


def normalize_benchmark_modality(label: object) -> str:
    """A benchmark's modality label as one of the schema's modality names ("Other" if none)."""
    text = str(label or "").lower()
    for name, pattern in _MODALITY_RULES:
        if pattern.search(text):
            return name
    return "Other"


# ------------------------------------------------------------------------------- tally


@dataclass
class McqTally:
    """Running accuracy for one benchmark, overall and by modality and by group.

    `accuracy` is over questions; `macro_modality` is the mean of the per-modality accuracies,
    the form of the paper's OMVQA number (its Table 1 OMVQA equals its Table 9 mean over
    modality columns)."""

    n: int = 0
    correct: int = 0
    unparsed: int = 0
    by_modality: dict[str, list[int]] = field(default_factory=dict)
    by_group: dict[str, list[int]] = field(default_factory=dict)

    def add(self, item: TextItem, choice: Choice, score: float) -> None:
        hit = int(score >= 1.0)
        self.n += 1
        self.correct += hit
        self.unparsed += int(choice.letter is None)
        for table, key in ((self.by_modality, item.modality), (self.by_group, item.group)):
            slot = table.setdefault(key, [0, 0])
            slot[0] += 1
            slot[1] += hit

    def summary(self) -> dict[str, Any]:
        def pct(hit: int, n: int) -> float | None:
            return round(100.0 * hit / n, 2) if n else None

        per_modality = [100.0 * h / n for n, h in self.by_modality.values() if n]
        return {
            "accuracy": pct(self.correct, self.n),
            "macro_modality": (
                round(sum(per_modality) / len(per_modality), 2) if per_modality else None
            ),
            "n": self.n,
            "unparsed": self.unparsed,
            "by_modality": {
                k: {"n": n, "accuracy": pct(h, n)} for k, (n, h) in sorted(self.by_modality.items())
            },
            "by_group": {
                k: {"n": n, "accuracy": pct(h, n)} for k, (n, h) in sorted(self.by_group.items())
            },
        }


# ------------------------------------------------------------------------------ MMMU

_IMAGE_REF = re.compile(r"<image (\d+)>")


def mmmu_files(root: Path, subjects: Sequence[str], split: str) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"MMMU root {root} does not exist")
    files = [p for s in subjects for p in sorted((root / s).glob(f"{split}-*.parquet"))]
    if not files:
        raise LayoutError(
            f"no {split} parquet under {root}/<Subject>/ for {', '.join(subjects)}; expected "
            f"<root>/<Subject>/{split}-00000-of-00001.parquet (HF MMMU/MMMU layout)"
        )
    return files


def read_mmmu(
    root: Path,
    subjects: Sequence[str] = MMMU_MEDICAL_SUBJECTS,
    split: str = "validation",
    limit: int = 0,
) -> Iterator[TextItem]:
    """MMMU questions of the given subjects. Multiple-choice only; open ones are skipped.

    `<image k>` references in the question become "(image k)" (the model's own image token
    must not be imitated in text); the first image is shown to the model.
    """
    count = 0
    for path in mmmu_files(root, subjects, split):
        subject = path.parent.name
        for batch in open_shard(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                if str(row.get("question_type", "multiple-choice")) != "multiple-choice":
                    continue
                options = tuple(str(o) for o in ast.literal_eval(row["options"] or "[]"))
                if not options or len(options) > len(LETTERS):
                    continue
                images = tuple(
                    row[f"image_{k}"]["bytes"]
                    for k in range(1, 8)
                    if row.get(f"image_{k}") and row[f"image_{k}"].get("bytes")
                )
                yield TextItem(
                    id=str(row["id"]),
                    benchmark="mmmu_med",
                    question=_IMAGE_REF.sub(r"(image \1)", row["question"] or ""),
                    answer=str(row["answer"]).strip().upper(),
                    answer_type="choice",
                    modality=normalize_benchmark_modality(row.get("img_type")),
                    group=subject,
                    images=images,
                    options=options,
                    meta={"n_images": len(images), "subfield": row.get("subfield")},
                )
                count += 1
                if limit and count >= limit:
                    return


# ------------------------------------------------------------------------- OmniMedVQA

OMNI_QA_DIRS = ("QA information", "QA_information")


def omnimedvqa_files(root: Path, access: Sequence[str] = ("Open-access",)) -> list[Path]:
    root = Path(root)
    for qa in OMNI_QA_DIRS:
        files = [p for a in access for p in sorted((root / qa / a).glob("*.json"))]
        if files:
            return files
    raise LayoutError(
        f"no QA json under {root}; expected <root>/QA information/<access>/<dataset>.json "
        f"(access: {', '.join(access)}) and <root>/Images/..."
    )


@dataclass
class OmniSkips:
    """OmniMedVQA rows that could not become items, by reason (reported, never silent)."""

    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def read_omnimedvqa(
    root: Path,
    access: Sequence[str] = ("Open-access",),
    limit: int = 0,
    skips: OmniSkips | None = None,
) -> Iterator[TextItem]:
    """OmniMedVQA questions; the gold letter is the option whose text equals `gt_answer`.

    The JSON files are streamed row by row; rows that cannot become items are counted in
    `skips` by reason (unparseable, no single option matching the gold, image missing)."""
    root = Path(root)
    skips = skips if skips is not None else OmniSkips()
    count = 0
    for path in omnimedvqa_files(root, access):
        for row in iter_json_rows(path):
            if isinstance(row, JsonRowError) or not isinstance(row, dict):
                skips.add("unparseable JSON row")
                continue
            item = _omni_item(root, row, path.stem, skips)
            if item is None:
                continue
            yield item
            count += 1
            if limit and count >= limit:
                return


def _omni_item(root: Path, row: dict[str, Any], dataset: str, skips: OmniSkips) -> TextItem | None:
    options = tuple(
        str(row[f"option_{letter}"]).strip()
        for letter in "ABCD"
        if row.get(f"option_{letter}") not in (None, "")
    )
    gold = normalize_answer(row.get("gt_answer"))
    matches = [i for i, o in enumerate(options) if normalize_answer(o) == gold]
    if len(matches) != 1:
        skips.add("gt_answer matches no single option")
        return None
    image_path = (root / str(row.get("image_path") or "")).resolve()
    if not str(row.get("image_path") or "") or not image_path.is_file():
        skips.add("image file missing")
        return None
    if root.resolve() not in image_path.parents:
        skips.add("image path outside the benchmark root")
        return None
    return TextItem(
        id=str(row.get("question_id") or f"{dataset}:{row.get('image_path')}"),
        benchmark="omnimedvqa",
        question=str(row.get("question") or ""),
        answer=LETTERS[matches[0]],
        answer_type="choice",
        modality=normalize_benchmark_modality(row.get("modality_type") or row.get("modality")),
        group=str(row.get("dataset") or dataset),
        images=(image_path.read_bytes(),),
        options=options,
        meta={"question_type": row.get("question_type")},
    )


def _choice_scorer(item: TextItem, reply: str) -> tuple[str | None, str, float]:
    choice, score = score_choice(item, reply)
    return choice.letter, choice.rule, score


def evaluate_mcq(
    model: TextModel,
    benchmarks: Mapping[str, Iterable[TextItem]],
    out_dir: Path,
    batch_size: int = 8,
) -> EvalResult:
    """Ask every question of each benchmark; parse the chosen option; tally and keep replies."""
    summaries: dict[str, dict[str, Any]] = {}
    writer = prediction_writer(Path(out_dir))
    with writer:
        for name, items in benchmarks.items():
            tally = McqTally()
            for item, parsed, rule, score in predict_and_score(
                model, items, _choice_scorer, writer, batch_size
            ):
                tally.add(item, Choice(parsed, rule), score)
            summaries[name] = tally.summary()
    return EvalResult(summaries, writer.shards)
