"""Answer normalization for scoring free-text replies: the rules, written down once.

Every comparison between a model's reply and a gold answer (closed VQA, open VQA recall,
multiple-choice option text) goes through `normalize_answer`, so "Yes." and "yes", "two" and
"2", "the left lung" and "left lung" compare equal everywhere. The rules, in order:

1. Unicode NFKC (full-width "Ｙｅｓ" becomes "Yes"), then lower case.
2. Apostrophes are deleted ("patient's" -> "patients", "don't" -> "dont").
3. A comma between digits is deleted ("1,000" -> "1000"); a period between digits is kept
   ("3.5" stays); every other punctuation or symbol character becomes a space (so "x-ray"
   -> "x ray", "yes." -> "yes", "t2-weighted" -> "t2 weighted").
4. Number words zero..twenty and the tens up to ninety become digits ("two" -> "2").
   "none" and "no" are *not* numbers here: they are answers in medical VQA.
5. The articles "a", "an", "the" are dropped.
6. Whitespace is collapsed to single spaces.

These follow the VQA-eval normalization that LLaVA-Med's medical VQA scoring inherits
(articles, number words, punctuation), simplified to rules that can be stated and tested.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

ARTICLES = frozenset({"a", "an", "the"})

_UNITS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
_TENS = ("thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
NUMBER_WORDS = {word: str(value) for value, word in enumerate(_UNITS)} | {
    word: str(value) for word, value in zip(_TENS, range(30, 100, 10), strict=True)
}

YES_NO = ("yes", "no")

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_DIGIT_PERIOD = re.compile(r"(?<=\d)\.(?=\d)")
_KEEP_PERIOD = "\x00"


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in ("P", "S")


def normalize_answer(text: object) -> str:
    """The normalized form of an answer or a reply (see the module docstring for the rules)."""
    if text is None:
        return ""
    value = unicodedata.normalize("NFKC", str(text)).lower()
    value = _APOSTROPHES.sub("", value)
    value = _DIGIT_COMMA.sub("", value)
    value = _DIGIT_PERIOD.sub(_KEEP_PERIOD, value)
    value = "".join(" " if _is_punctuation(c) else c for c in value).replace(_KEEP_PERIOD, ".")
    words = [NUMBER_WORDS.get(word, word) for word in value.split()]
    return " ".join(word for word in words if word not in ARTICLES)


def tokens(text: object) -> list[str]:
    """The normalized answer as a list of words."""
    return normalize_answer(text).split()


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether normalized `phrase` occurs in normalized `text` as whole words."""
    if not phrase:
        return False
    return f" {phrase} " in f" {text} "


def first_yes_no(text: str) -> str | None:
    """The first "yes" or "no" word of a normalized reply, if any ("yes, there is" -> yes)."""
    for word in text.split():
        if word in YES_NO:
            return word
    return None


def token_recall(prediction: str, reference: str) -> float:
    """Share of the reference's words (counted with multiplicity) found in the prediction."""
    ref = Counter(reference.split())
    if not ref:
        return 0.0
    pred = Counter(prediction.split())
    hit = sum(min(count, pred[word]) for word, count in ref.items())
    return hit / sum(ref.values())
