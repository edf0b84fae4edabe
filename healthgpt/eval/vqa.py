"""Medical VQA (VQA-RAD, SLAKE, PathVQA): the trained question form and two scorers.

Form. A question is asked the way the evaluated model was trained on it: the training
declaration (`healthgpt.data.tasks`, rendered by `mixture.tasks.plan_record` / `render_sample`,
with the mixture config the model was trained from) renders the held-out record exactly as
the mixture renders it, so a closed question is single choice (the same options, in the same
seeded order, with the same instruction) when that config trains closed questions as single
choice, and plain otherwise ("both": single choice). A reply to a single-choice prompt is
parsed to an option (`mcq.parse_choice`) and the option's text is what both scorers judge;
an unparsed reply is judged as it is.

Scorers, both kept per question and per benchmark:

- strict (this project's), after `normalize_answer` on both sides:
  - closed, gold yes/no: correct when the reply equals the gold, or else when its first
    "yes"/"no" word is the gold ("Yes, there is." -> yes; "Not present." -> 0).
  - closed, other gold (an option named in the question, "left or right?"): correct when the
    reply equals the gold, or names it as whole words and none of the question's other
    options (the words either side of an "or" in the question).
  - open: recall of the gold's words in the reply, in [0, 1].
- LLaVA-Med's (`normalize.llava_med_*`): closed = the normalized gold is a substring of the
  normalized reply; open = its token recall ("none" reads as 0).

"close" is the mean over closed questions, "open" over open ones, "all" the mean credit over
every question (the paper does not define "all"; this is the reading under which its
"all" < "close" throughout). Each comes with its sample size and 95% interval (`stats`).

Items come from the ingested canonical records (`<ingested>/<source>/data/test-*.parquet`),
streamed a record batch at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthgpt.data.ingest.run import ingested_parts
from healthgpt.data.mixture.config import MixtureConfig
from healthgpt.data.mixture.tasks import (
    AnswerSets,
    TaskContext,
    plan_record,
    render_sample,
)
from healthgpt.data.shards import open_shard, shard_paths
from healthgpt.data.tasks import EVAL_FORMS, SINGLE_CHOICE, strip_image
from healthgpt.data.tasks import VQA_TASKS as VQA_SPECS
from healthgpt.eval.mcq import parse_choice
from healthgpt.eval.normalize import (
    YES_NO,
    contains_phrase,
    first_yes_no,
    llava_med_closed,
    llava_med_recall,
    normalize_answer,
    token_recall,
)
from healthgpt.eval.predict import (
    LETTERS,
    Scored,
    TextItem,
    check_option_count,
)
from healthgpt.eval.stats import Running

_OR = re.compile(r"(\S+) or (\S+)")
_COLUMNS = ["id", "split", "kind", "modality", "question", "answer", "answer_type", "image"]
_COLUMNS += ["meta", "body_part", "subject_id"]
# The VQA tasks in the order a record's planned samples are asked (single choice first:
# under "both" the evaluation asks the paper's form), and the form each is asked in.
VQA_TASKS = tuple(sorted(VQA_SPECS, key=lambda t: EVAL_FORMS[t] != SINGLE_CHOICE))
FORMS = {task: EVAL_FORMS[task] for task in VQA_TASKS}


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
    """The strict score of a reply to the question as asked (plain text, or an option)."""
    said = _judged_text(item, reply)
    if item.answer_type == "closed":
        return score_closed(said, item.answer, item.question)
    return score_open(said, item.answer)


def score_llava_med(item: TextItem, reply: str) -> float:
    """LLaVA-Med's score of the same reply (closed: substring rule; open: token recall)."""
    said = _judged_text(item, reply)
    if item.answer_type == "closed":
        return llava_med_closed(said, item.answer)
    return llava_med_recall(said, item.answer)


def _judged_text(item: TextItem, reply: str) -> str:
    """What the scorers judge: the chosen option's text for a single-choice prompt (when the
    reply names one), else the reply itself."""
    if not item.options:
        return reply
    letter = parse_choice(reply, item.options).letter
    return item.options[LETTERS.index(letter)] if letter else reply


def vqa_scorer(item: TextItem, reply: str) -> Scored:
    """Both scores of one reply; `parsed`/`rule` are the strict scorer's."""
    credit = score_vqa(item, reply)
    return Scored(credit.parsed, credit.rule, credit.score, score_llava_med(item, reply))


SCORERS = ("strict", "llava_med")


@dataclass
class VqaTally:
    """Running sums for one benchmark, per scorer: memory does not grow with the data."""

    closed: dict[str, Running] = field(default_factory=lambda: {s: Running() for s in SCORERS})
    open: dict[str, Running] = field(default_factory=lambda: {s: Running() for s in SCORERS})
    every: dict[str, Running] = field(default_factory=lambda: {s: Running() for s in SCORERS})
    forms: dict[str, int] = field(default_factory=dict)
    by_modality: dict[str, Running] = field(default_factory=dict)

    def add(self, item: TextItem, scored: Scored) -> None:
        values = {"strict": scored.score, "llava_med": scored.score_llava_med or 0.0}
        group = self.closed if item.answer_type == "closed" else self.open
        for scorer, value in values.items():
            group[scorer].add(value)
            self.every[scorer].add(value)
        self.forms[item.form] = self.forms.get(item.form, 0) + 1
        self.by_modality.setdefault(item.modality, Running()).add(scored.score)

    def summary(self) -> dict[str, Any]:
        """Per scorer: close, open, all as {value (x100), n, ci}; counts; forms asked."""

        def cells(scorer: str) -> dict[str, Any]:
            return {
                "close": self.closed[scorer].summary(),
                "open": self.open[scorer].summary(),
                "all": self.every[scorer].summary(),
            }

        return {
            **cells("strict"),
            "llava_med": cells("llava_med"),
            "n_closed": self.closed["strict"].n,
            "n_open": self.open["strict"].n,
            "n": self.every["strict"].n,
            "forms": dict(sorted(self.forms.items())),
            "by_modality": {m: r.summary() for m, r in sorted(self.by_modality.items())},
        }


def test_shards(directory: Path, split: str = "test") -> list[Path]:
    """An ingested source's shard files of one split, whole or in chunks (`ingested_parts`):
    none if it was never ingested; a partly ingested source raises `IncompleteSource`."""
    try:
        parts = ingested_parts(directory)
    except FileNotFoundError:
        return []  # never ingested: the report says which benchmarks have no questions
    return [path for part in parts for path in shard_paths(part, f"data/{split}-")]


def closed_answer_sets(directory: Path, source: str) -> AnswerSets:
    """The closed training answers of one source, from which the training drew the options
    of its single-choice questions (the mixture builds the same sets from the same records)."""
    answers = AnswerSets()
    columns = ["id", "kind", "split", "answer", "answer_type", "meta"]
    for path in test_shards(directory, "train"):
        for batch in open_shard(path).iter_batches(columns=columns, batch_size=1024):
            for record in batch.to_pylist():
                answers.add(record, source)
    return answers


def trained_form(record: dict[str, Any], source: str, ctx: TaskContext) -> dict[str, Any]:
    """How the training declaration renders this VQA record (task, prompt, options), or the
    plain question with the reason the declaration has no form for it."""
    planned, reason = plan_record(record, source, record["split"], ctx)
    tasks = [p for p in planned if p.task in VQA_TASKS]
    if not tasks:
        return {"task": None, "prompt": "", "options": (), "form": f"plain ({reason or 'no task'})"}
    row = render_sample(record, tasks[0], source, ctx)
    prompt = strip_image(row["conversations"][0]["value"])
    options = tuple(json.loads(row["meta"] or "{}").get("options") or ())
    task = tasks[0].task
    return {"task": task, "prompt": prompt, "options": options, "form": FORMS[task]}


def read_vqa_items(
    directory: Path,
    benchmark: str,
    split: str = "test",
    limit: int = 0,
    trained: MixtureConfig | None = None,
) -> Iterator[TextItem]:
    """The VQA questions of one ingested source's split, in shard order (deterministic), each
    in the form `trained` (the mixture config the model was trained from) renders it; plain
    questions when no config is given."""
    if trained is not None:
        check_option_count(trained.max_choice_options, "the trained config's max_choice_options")
    ctx = TaskContext(trained, closed_answer_sets(directory, benchmark)) if trained else None
    count = 0
    for path in test_shards(directory, split):
        for batch in open_shard(path).iter_batches(columns=_COLUMNS, batch_size=256):
            for row in batch.to_pylist():
                if row["split"] != split or row["kind"] != "vqa":
                    continue
                image = row.get("image") or {}
                form = trained_form(row, benchmark, ctx) if ctx else {"form": "plain"}
                yield TextItem(
                    id=row["id"],
                    benchmark=benchmark,
                    question=row["question"] or "",
                    answer=row["answer"] or "",
                    answer_type="closed" if row["answer_type"] == "closed" else "open",
                    modality=row["modality"],
                    group=benchmark,
                    images=(image["bytes"],) if image.get("bytes") else (),
                    options=form.get("options", ()),
                    prompt=form.get("prompt", ""),
                    source=benchmark,
                    form=form["form"],
                )
                count += 1
                if limit and count >= limit:
                    return
