"""Multiple-choice benchmarks (MMMU medical subset, OmniMedVQA): readers and reply parsing.

Reply -> chosen option (`parse_choice`), the rule is kept in the predictions table:

1. `exact`: the reply is just a letter ("b", "(B)", "C.").
2. `explicit`: the last letter the reply declares wins over any option text elsewhere in it:
   after an answer phrase ("Answer: A because ...", "the answer is (c)", "Option D", "I
   choose B", "I'd pick b"), "A is correct", a bracketed letter "(B)", or a line starting
   "B." / "B)". A lower-case letter after a phrase counts when nothing or a connective
   follows ("b because"), and "a"/"A" followed by an option's text is the article ("the
   correct choice is a benign cyst"). A list of the options echoed back ("A. yes\nB. no")
   declares nothing and is `unparsed`.
3. `text`: only when no letter is declared: the reply names an option's text (after
   `normalize_answer`, so articles, case and punctuation do not matter; as whole words), so
   "Vitamin D deficiency" is the option with that text, not option D. An option whose text is
   inside a longer named option ("lung" in "lung cancer") does not count, nor one negated just
   before ("not anemia", "rather than a cyst"); of the options left, the one named last wins
   ("not pneumonia but edema" -> edema).
4. `letter`: the last standalone capital letter among the valid ones, where "A" followed by a
   lower-case word is the article ("A lesion ..."), as is any lower-case "a".
5. otherwise `unparsed` (letter None). Each benchmark's scorer says what an unparsed reply
   scores: MMMU picks a seeded random option, as its official scorer does, and counts it.

MMMU's official parser (`parse_multi_choice_response` in MMMU-Benchmark/MMMU) agrees on its
own cases (bracketed letters, bare letters, the last of several, option content); the
differences are the rules above that fix its known failures (it reads content only in
replies of more than five words, and negated mentions count there).

Published layouts read here:

- MMMU (HF `MMMU/MMMU`): `<root>/<Subject>/<split>-00000-of-00001.parquet` with columns id,
  question, options (a Python-list string), answer (letter, or text for open questions),
  image_1..image_7 ({bytes, path}), img_type, question_type, subfield. The medical subset is
  the "Health & Medicine" discipline: 5 subjects x 30 validation questions = 150.
- OmniMedVQA: `<root>/QA information/Open-access/<dataset>.json`, each a list of {question_id,
  question_type, question, gt_answer, image_path, option_A..option_D, modality_type, dataset},
  `image_path` relative to `<root>` (`Images/<dataset>/...`).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthgpt.data.errors import LayoutError
from healthgpt.data.json_rows import JsonRowError, iter_json_rows
from healthgpt.data.shards import open_shard
from healthgpt.data.tasks import SINGLE_CHOICE
from healthgpt.data.vocab import first_modality_in
from healthgpt.eval.normalize import normalize_answer
from healthgpt.eval.predict import (
    LETTERS,
    Scored,
    TextItem,
    check_option_count,
)
from healthgpt.eval.stats import Running

MMMU_MEDICAL_SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)
MMMU_SEED = 42  # the official scorer seeds Python's `random` with 42

# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Choice:
    """The option a reply chose (a letter, or None when unparseable) and the rule used."""

    letter: str | None
    rule: str


_UP = f"{LETTERS[0]}-{LETTERS[-1]}"  # the letters the prompts write, as a character range
_ANY = _UP + _UP.lower()
_ONLY = re.compile(rf"^\s*[(\[]?([{_ANY}])[)\].:]?\s*$")
# A letter after a declaring phrase: "answer is X", "Answer: X", "option X", "I choose X".
_PHRASE = (
    r"(?i:\banswer\s*(?:is|:|=|would be|should be|will be)?|\boption|\bchoice\s*(?:is|:)?"
    r"|\b(?:choose|chose|pick|select|go with)(?:\s+option)?)"
)
_DECLARED = re.compile(_PHRASE + rf"\s*[(\[]?([{_ANY}])(?![A-Za-z0-9])")
_LETTER_IS = re.compile(
    rf"(?<![A-Za-z0-9])([{_UP}])\s+(?i:is|would be)\s+(?i:the\s+)?(?i:correct|right|best|answer)"
)
_BRACKETED = re.compile(rf"[(\[]([{_ANY}])[)\]]")
_LEADING = re.compile(rf"(?:^|\n)\s*([{_UP}])[.):](?=\s|$)")
_STANDALONE = re.compile(rf"(?<![A-Za-z0-9])([{_UP}])(?![A-Za-z0-9])")
# After a lower-case letter, the words that make it a letter, not a word ("b because").
_CONNECTIVES = frozenset({"because", "since", "as", "given", "due", "which", "for", "here"})
# Words just before an option's text that take it back ("not anemia", "rather than a cyst").
_NEGATIONS = frozenset({"not", "no", "without", "nor", "never", "exclude", "excluded", "than"})


def parse_choice(reply: str, options: Sequence[str]) -> Choice:
    """The option letter a free-text reply chose, by the rules in the module docstring."""
    check_option_count(len(options))
    valid = LETTERS[: len(options)]
    text = str(reply or "")
    only = _ONLY.match(text)
    if only:
        letter = only.group(1).upper()
        return Choice(letter, "exact") if letter in valid else Choice(None, "unparsed")
    declared, echoed = _declared(text, options)
    declared = [d for d in declared if d in valid]
    if declared:
        return Choice(declared[-1], "explicit")
    if echoed:
        return Choice(None, "unparsed")
    by_text = _by_text(text, options)
    if by_text is not None:
        return Choice(by_text, "text")
    standalone = []
    for match in _STANDALONE.finditer(text):
        letter = match.group(1)
        if letter in valid and not (letter == "A" and re.match(r"\s+[a-z]", text[match.end() :])):
            standalone.append(letter)
    if standalone:
        return Choice(standalone[-1], "letter")
    return Choice(None, "unparsed")


def _declared(text: str, options: Sequence[str]) -> tuple[list[str], bool]:
    """The letters the reply declares, in reply order: after an answer phrase, bracketed,
    "X is correct", or leading a line ("B." / "B)"). A lower-case letter after a phrase counts
    only when nothing or a connective ("b because") follows; "A"/"a" followed by an option's
    text is the article ("the answer is a benign cyst"). A list of options echoed back
    ("A. yes\\nB. no", "(a) yes (b) no") declares nothing, and is reported as echoed."""
    found: list[tuple[int, str]] = []
    for match in _DECLARED.finditer(text):
        letter, rest = match.group(1), text[match.end() :]
        word = re.match(r"\s+([A-Za-z]+)", rest)
        if word and letter.islower() and word.group(1).lower() not in _CONNECTIVES:
            continue
        if letter in "Aa" and word and _names_option(rest, options):
            continue
        found.append((match.start(1), letter.upper()))
    found += [(m.start(1), m.group(1)) for m in _LETTER_IS.finditer(text)]
    listed = [
        (m.start(1), m.group(1).upper(), m.end())
        for pattern in (_BRACKETED, _LEADING)
        for m in pattern.finditer(text)
    ]
    echoed = [e for e in listed if _names_option(text[e[2] :], options, e[1])]
    is_echo = len({e[1] for e in echoed}) >= 2
    found += [(e[0], e[1]) for e in listed if not (is_echo and e in echoed)]
    return [letter for _, letter in sorted(set(found))], is_echo


def _names_option(rest: str, options: Sequence[str], letter: str | None = None) -> bool:
    """Whether `rest` starts with an option's text (that of `letter` when given)."""
    head = f"{normalize_answer(rest)} "
    chosen = (
        [options[LETTERS.index(letter)]]
        if letter and LETTERS.index(letter) < len(options)
        else options
    )
    return any((needle := normalize_answer(o)) and head.startswith(f"{needle} ") for o in chosen)


def _by_text(text: str, options: Sequence[str]) -> str | None:
    """The option named last in the reply (whole words, normalized), ignoring options only
    named inside a longer named option and options negated just before ("not anemia", "no
    fracture"); None when no option's text is in the reply."""
    reply = f" {normalize_answer(text)} "
    spans: list[tuple[int, int, int]] = []  # (start, end, option index)
    for index, option in enumerate(options):
        needle = normalize_answer(option)
        if not needle:
            continue
        start = reply.find(f" {needle} ")
        while start >= 0:
            spans.append((start, start + len(needle) + 1, index))
            start = reply.find(f" {needle} ", start + 1)
    kept = [s for s in spans if not any(_inside(s, o) for o in spans)]
    kept = [s for s in kept if not _NEGATIONS & set(reply[: s[0]].split()[-2:])]
    if not kept:
        return None
    return LETTERS[max(kept, key=lambda s: (s[0], s[1] - s[0]))[2]]


def _inside(span: tuple[int, int, int], other: tuple[int, int, int]) -> bool:
    """Whether `span` lies within the longer `other`."""
    return other[0] <= span[0] and span[1] <= other[1] and other[1] - other[0] > span[1] - span[0]


def score_choice(item: TextItem, reply: str) -> tuple[Choice, float]:
    choice = parse_choice(reply, item.options)
    return choice, float(choice.letter is not None and choice.letter == item.answer)


# ---------------------------------------------------------------------------- modality


def normalize_benchmark_modality(label: object) -> str:
    """A benchmark's modality label as one of the schema's modality names ("Other" if none):
    the first modality it names, by the one modality word table (`vocab.MODALITY_WORDS`).
    OmniMedVQA writes e.g. "CT(Computed Tomography)", "MR (Mag-netic Resonance Imaging)",
    "Fundus Photography"; MMMU's img_type e.g. "['CT Scans']", "['Microscopic Images']"."""
    return first_modality_in(label)


# ------------------------------------------------------------------------------- tally


@dataclass
class McqTally:
    """Running accuracy for one benchmark, overall, by modality and by group, with the counts
    of unparsed replies and of the random choices made for them (MMMU's rule).

    `macro_modality` is the mean of the per-modality accuracies over every modality this run
    evaluated (labelled as such in the report); the paper's OMVQA is the mean over its seven
    Table 9 columns, which the report computes from `by_modality`."""

    overall: Running = field(default_factory=Running)
    unparsed: int = 0
    random_choices: int = 0
    n_open: int = 0
    by_modality: dict[str, Running] = field(default_factory=dict)
    by_group: dict[str, Running] = field(default_factory=dict)

    def add(self, item: TextItem, scored: Scored) -> None:
        self.overall.add(scored.score)
        self.unparsed += int(scored.rule in ("unparsed", "random"))
        self.random_choices += int(scored.rule == "random")
        self.n_open += int(item.answer_type == "open")
        for table, key in ((self.by_modality, item.modality), (self.by_group, item.group)):
            table.setdefault(key, Running()).add(scored.score)

    def summary(self) -> dict[str, Any]:
        per_modality = [r.mean() for r in self.by_modality.values() if r.n]
        return {
            "accuracy": self.overall.summary(),
            "macro_modality": (
                round(100.0 * sum(per_modality) / len(per_modality), 2) if per_modality else None
            ),
            "n": self.overall.n,
            "n_open": self.n_open,
            "unparsed": self.unparsed,
            "random_choices": self.random_choices,
            "by_modality": {k: r.summary() for k, r in sorted(self.by_modality.items())},
            "by_group": {k: r.summary() for k, r in sorted(self.by_group.items())},
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


def image_refs(text: str) -> str:
    """`<image k>` as "(image k)": the model's own image token must not be imitated in text."""
    return _IMAGE_REF.sub(r"(image \1)", text)


def read_mmmu(
    root: Path,
    subjects: Sequence[str] = MMMU_MEDICAL_SUBJECTS,
    split: str = "validation",
    limit: int = 0,
) -> Iterator[TextItem]:
    """Every MMMU question of the given subjects, multiple-choice and open (the official
    denominator), with every image of the question in order (image_1..image_7) and `<image k>`
    references rewritten in the question and in the options."""
    count = 0
    for path in mmmu_files(root, subjects, split):
        subject = path.parent.name
        for batch in open_shard(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                yield _mmmu_item(row, subject)
                count += 1
                if limit and count >= limit:
                    return


def _mmmu_item(row: dict[str, Any], subject: str) -> TextItem:
    is_choice = str(row.get("question_type", "multiple-choice")) == "multiple-choice"
    options = ast.literal_eval(row["options"] or "[]") if is_choice else []
    images = tuple(
        row[f"image_{k}"]["bytes"]
        for k in range(1, 8)
        if row.get(f"image_{k}") and row[f"image_{k}"].get("bytes")
    )
    answer = str(row["answer"]).strip()
    return TextItem(
        id=str(row["id"]),
        benchmark="mmmu_med",
        question=image_refs(row["question"] or ""),
        answer=answer.upper() if is_choice else answer,
        answer_type="choice" if is_choice else "open",
        modality=normalize_benchmark_modality(row.get("img_type")),
        group=subject,
        images=images,
        options=tuple(image_refs(str(o)) for o in options),
        source=f"MMMU/{subject}",
        form=SINGLE_CHOICE if is_choice else "short answer",
        meta={"n_images": len(images), "subfield": row.get("subfield")},
    )


def score_mmmu(item: TextItem, reply: str) -> Scored:
    """MMMU's official scoring: a choice must equal the gold letter, an unparsed reply gets a
    random option (seeded per question, so reruns agree; rule `random`); an open answer is
    right when `mmmu_open_correct` says so."""
    if item.answer_type == "open":
        predictions = mmmu_open_predictions(reply)
        correct = mmmu_open_correct(item.answer, predictions)
        return Scored(repr(predictions)[:200], "open", float(correct))
    choice = parse_choice(reply, item.options)
    letter, rule = choice.letter, choice.rule
    if letter is None:
        valid = LETTERS[: len(item.options)]
        letter, rule = random.Random(f"{MMMU_SEED}:{item.id}").choice(valid), "random"
    return Scored(letter, rule, float(letter == item.answer))


def _mmmu_number(text: str) -> float | None:
    try:
        return round(float(text.replace(",", "")), 2)
    except ValueError:
        return None


def _mmmu_normalize(text: str) -> list[Any]:
    """MMMU's `normalize_str`: a number as a float rounded to 2 places; a one-character
    string padded with a space on either side (so it does not match inside a word)."""
    text = text.strip()
    number = _mmmu_number(text)
    if number is not None:
        return [number]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


_NUMBER_PATTERNS = (
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),
)
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _key_responses(response: str) -> list[str]:
    """MMMU's `get_key_subresponses`: per sentence, the shortest tail after an indicator word
    ("is ", "so ", "answer ", ... and "=" in the last sentence). As in the official code, an
    empty tail is shorter than any other, so a sentence whose last indicator ends it ("... is
    2 =") yields no key, and a reply without keys is its own key."""
    response = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for index, part in enumerate(parts):
        indicators = _KEY_INDICATORS + (("=",) if index == len(parts) - 1 else ())
        shortest = ""
        for indicator in (i for i in indicators if i in part):
            tail = part.split(indicator)[-1].strip()
            if not shortest or len(tail) < len(shortest):
                shortest = tail  # an empty tail after a later indicator wins, as officially
        if shortest and shortest not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def mmmu_open_predictions(response: str) -> list[Any]:
    """MMMU's `parse_open_response`: the key sub-responses and every number in them,
    normalized, without duplicates."""
    keys = _key_responses(str(response or ""))
    found: list[str] = list(keys)
    for key in keys:
        for pattern in _NUMBER_PATTERNS:
            found += pattern.findall(key)
    out: list[Any] = []
    for text in found:
        for value in _mmmu_normalize(text):
            if value not in out:
                out.append(value)
    return out


def mmmu_open_correct(answer: str, predictions: Sequence[Any]) -> bool:
    """MMMU's `eval_open`: a string gold must occur in a string prediction, a numeric gold
    must equal a numeric prediction. A gold written as a list ("['3', '3.0']") accepts any."""
    golds: list[Any] = []
    text = str(answer).strip()
    values = ast.literal_eval(text) if text.startswith("[") and text.endswith("]") else [text]
    for value in values:
        golds += _mmmu_normalize(str(value))
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(g, str) and g in prediction for g in golds):
                return True
        elif prediction in golds:
            return True
    return False


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
        source=f"OmniMedVQA/{row.get('dataset') or dataset}",
        form=SINGLE_CHOICE,
        meta={"question_type": row.get("question_type")},
    )


def score_omnimedvqa(item: TextItem, reply: str) -> Scored:
    """Accuracy: the parsed option must be the gold one; an unparsed reply is wrong (and
    counted)."""
    choice, score = score_choice(item, reply)
    return Scored(choice.letter, choice.rule, score)
