"""Medical VQA scoring (VQA-RAD, SLAKE, PathVQA) the way the literature reports it.

The paper's Table 1 gives, per benchmark, accuracy on closed questions ("close") and on all
questions ("all"). Per question, after `normalize_answer` on both sides:

- closed, gold yes/no: correct when the reply's normalized text equals the gold, or else when
  the first "yes"/"no" word of the reply is the gold ("Yes, there is." -> yes).
- closed, other gold (an option named in the question, "left or right?"): correct when the
  reply equals the gold, or names the gold as whole words and none of the question's other
  options (the words either side of an "or" in the question).
- open: credit = recall of the gold's words in the reply (LLaVA-Med's open-question metric),
  in [0, 1].

"close" is the mean over closed questions; "all" the mean credit over every question, closed
and open together; "open" (open recall) is reported beside them.

Items come from the ingested canonical records (`<ingested>/<source>/data/test-*.parquet`),
streamed a record batch at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthgpt.data.ingest.run import ingested_parts
from healthgpt.data.shards import open_shard, shard_paths
from healthgpt.eval.normalize import (
    YES_NO,
    contains_phrase,
    first_yes_no,
    normalize_answer,
    token_recall,
)
from healthgpt.eval.predict import (
    EvalResult,
    TextItem,
    TextModel,
    predict_and_score,
    prediction_writer,
)

VQA_BENCHMARKS = ("vqa_rad", "slake", "pathvqa")

_OR = re.compile(r"(\S+) or (\S+)")
_COLUMNS = ["id", "split", "kind", "modality", "question", "answer", "answer_type", "image"]


@dataclass(frozen=True)
class Credit:
    """How one reply was scored: credit in [0, 1], the rule that decided, the parsed reply."""

    score: float
    rule: str
    parsed: str


def question_options(question: str) -> set[str]:
    """Words the question offers as alternatives: those either side of each " or "."""
    found: set[str] = set()
    for left, right in _OR.findall(normalize_answer(question)):
        found.update((left, right))
    return found


def score_closed(reply: str, answer: str, question: str = "") -> Credit:
    gold, pred = normalize_answer(answer), normalize_answer(reply)
    if pred == gold:
        return Credit(1.0, "exact", pred)
    if gold in YES_NO:
        said = first_yes_no(pred)
        return Credit(float(said == gold), "yes_no" if said else "no_yes_no", said or pred)
    others = {o for o in question_options(question) if o not in gold.split()}
    if contains_phrase(pred, gold) and not any(contains_phrase(pred, o) for o in others):
        return Credit(1.0, "option", gold)
    return Credit(0.0, "mismatch", pred)


def score_open(reply: str, answer: str) -> Credit:
    pred = normalize_answer(reply)
    return Credit(token_recall(pred, normalize_answer(answer)), "recall", pred)


def score_vqa(item: TextItem, reply: str) -> Credit:
    if item.answer_type == "closed":
        return score_closed(reply, item.answer, item.question)
    return score_open(reply, item.answer)


@dataclass
class VqaTally:
    """Running sums for one benchmark: memory does not grow with the number of questions."""

    closed: int = 0
    closed_credit: float = 0.0
    open: int = 0
    open_credit: float = 0.0
    by_modality: dict[str, list[float]] = field(default_factory=dict)

    def add(self, item: TextItem, credit: Credit) -> None:
        if item.answer_type == "closed":
            self.closed += 1
            self.closed_credit += credit.score
        else:
            self.open += 1
            self.open_credit += credit.score
        slot = self.by_modality.setdefault(item.modality, [0, 0.0])
        slot[0] += 1
        slot[1] += credit.score

    def summary(self) -> dict[str, Any]:
        """Percentages (x100, as the paper prints them) and counts."""
        total = self.closed + self.open
        return {
            "close": _pct(self.closed_credit, self.closed),
            "open": _pct(self.open_credit, self.open),
            "all": _pct(self.closed_credit + self.open_credit, total),
            "n_closed": self.closed,
            "n_open": self.open,
            "n": total,
            "by_modality": {
                m: {"n": int(n), "all": _pct(c, int(n))}
                for m, (n, c) in sorted(self.by_modality.items())
            },
        }


def _pct(credit: float, n: int) -> float | None:
    return round(100.0 * credit / n, 2) if n else None


def test_shards(directory: Path, split: str = "test") -> list[Path]:
    """An ingested source's shard files of one split, whole or in chunks (`ingested_parts`):
    none if it was never ingested; a partly ingested source raises `IncompleteSource`."""
    try:
        parts = ingested_parts(directory)
    except FileNotFoundError:
        return []  # never ingested: the report says which benchmarks have no questions
    return [path for part in parts for path in shard_paths(part, f"data/{split}-")]


def read_vqa_items(
    directory: Path, benchmark: str, split: str = "test", limit: int = 0
) -> Iterator[TextItem]:
    """The VQA questions of one ingested source's split, in shard order (deterministic)."""
    count = 0
    for path in test_shards(directory, split):
        for batch in open_shard(path).iter_batches(columns=_COLUMNS, batch_size=256):
            for row in batch.to_pylist():
                if row["split"] != split or row["kind"] != "vqa":
                    continue
                image = row.get("image") or {}
                yield TextItem(
                    id=row["id"],
                    benchmark=benchmark,
                    question=row["question"] or "",
                    answer=row["answer"] or "",
                    answer_type="closed" if row["answer_type"] == "closed" else "open",
                    modality=row["modality"],
                    group=benchmark,
                    images=(image["bytes"],) if image.get("bytes") else (),
                )
                count += 1
                if limit and count >= limit:
                    return


def _vqa_scorer(item: TextItem, reply: str) -> tuple[str | None, str, float]:
    credit = score_vqa(item, reply)
    return credit.parsed, credit.rule, credit.score


def evaluate_vqa(
    model: TextModel,
    sources: Mapping[str, Path],
    out_dir: Path,
    batch_size: int = 8,
    limit: int = 0,
) -> EvalResult:
    """Answer every test question of each ingested source; score, tally and keep the replies.

    A source with no ingested test split is skipped with a note (and no row in Table 1).
    """
    summaries: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    writer = prediction_writer(Path(out_dir))
    with writer:
        for name, directory in sources.items():
            if not test_shards(directory):
                notes.append(f"{name}: no ingested test split under {directory}; not evaluated")
                continue
            tally = VqaTally()
            items = read_vqa_items(directory, name, limit=limit)
            for item, parsed, rule, score in predict_and_score(
                model, items, _vqa_scorer, writer, batch_size
            ):
                tally.add(item, Credit(score, rule, parsed or ""))
            summaries[name] = tally.summary()
    return EvalResult(summaries, writer.shards, notes)
