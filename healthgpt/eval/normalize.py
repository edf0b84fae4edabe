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


# --------------------------------------------------------------- LLaVA-Med's convention
#
# A re-implementation, checked against a transcription of its code in the tests, of the
# scorer in LLaVA-Med's `llava/eval/run_eval_batch.py` and
# `eval_metrics/{glossary,evaluate_metrics}.py`, which most medical VLM papers reuse. It is
# kept apart from `normalize_answer` on purpose: it is a
# different, looser convention (substring matching, "none" read as 0), reported beside ours.

_LLAVA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<")
_LLAVA_PUNCT += ("@", "`", ",", "?", "!")
_LLAVA_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
# LLaVA-Med's period pattern is "(?!<=\d)(\.)(?!\d)": a typo for a look-behind, so in effect
# every period not followed by a digit is removed.
_LLAVA_PERIOD = re.compile(r"\.(?!\d)")
_LLAVA_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4"}
_LLAVA_NUMBERS |= {"five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}

# LLaVA-Med's `contractions` table (VQA-eval's), applied after lower-casing, so its keys with
# capitals ("Im", "Ive", "Id've", "I'dve") can never match and are left out.
_LLAVA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip


def llava_med_normalize(text: object) -> str:
    """LLaVA-Med's `normalize_word` (after its lower-casing): punctuation to spaces (removed
    instead when it touches a space or the text has a digit comma), periods not before a digit
    removed, "none"/"zero".."ten" to digits, articles dropped, then its contraction table
    ("dont" -> "don't", "cant" -> "can't"), then commas removed."""
    token = str(text or "").lower()
    out = token
    for p in _LLAVA_PUNCT:
        touching = (p + " ") in token or (" " + p) in token
        out = out.replace(p, "" if touching or _LLAVA_DIGIT_COMMA.search(token) else " ")
    out = _LLAVA_PERIOD.sub("", out, count=32)  # its `re.UNICODE` lands in `count`
    words = [_LLAVA_NUMBERS.get(w, w) for w in out.split()]
    words = [_LLAVA_CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words).replace(",", "")


def llava_med_closed(reply: object, answer: object) -> float:
    """LLaVA-Med's closed-question hit: the normalized gold occurs in the normalized reply as
    a substring ("not present" holds "no"); a gold that normalizes to nothing is, as in its
    code, a substring of every reply (a hit)."""
    return float(llava_med_normalize(answer) in llava_med_normalize(reply))


def llava_med_recall(reply: object, answer: object) -> float:
    """LLaVA-Med's open-question recall (`calculate_f1score`'s recall): true positives count
    the reply's occurrences of each gold word, false negatives the gold words never said."""
    pred = Counter(llava_med_normalize(reply).split())
    gold = Counter(llava_med_normalize(answer).split())
    if not pred or not gold:
        return 0.0
    tp = sum(count for word, count in pred.items() if word in gold)
    fn = sum(count for word, count in gold.items() if word not in pred)
    return tp / (tp + fn) if tp else 0.0
