"""LLaVA-Med's VQA scorer against a transcription of its code (`eval_metrics/glossary.py`
`normalize_word`, `evaluate_metrics.py` `calculate_f1score`, and `run_eval_batch.py`'s closed
rule), kept here and not in the library: the library must agree with it pair by pair."""

import re
from collections import defaultdict

import pytest

from healthgpt.eval.normalize import llava_med_closed, llava_med_recall

# ------------------------------------------------ transcription (official, abridged table)

CONTRACTIONS = {"dont": "don't", "cant": "can't", "isnt": "isn't", "wont": "won't",
                "doesnt": "doesn't", "thats": "that's", "somebody'd": "somebodyd",
                "Im": "I'm"}  # fmt: skip
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4"}
MANUAL_MAP |= {"five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
         "@", "`", ",", "?", "!"]  # fmt: skip


def normalize_word(token):
    _token = token
    for p in PUNCT:
        if (p + " " in token or " " + p in token) or (re.search(COMMA_STRIP, token) is not None):
            _token = _token.replace(p, "")
        else:
            _token = _token.replace(p, " ")
    token = PERIOD_STRIP.sub("", _token, re.UNICODE)
    _token = []
    for word in token.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            _token.append(word)
    for i, word in enumerate(_token):
        if word in CONTRACTIONS:
            _token[i] = CONTRACTIONS[word]
    return " ".join(_token).replace(",", "")


def split_sentence(sentence, n):
    words = defaultdict(int)
    tmp = sentence.lower().strip().split()
    for i in range(len(tmp) - n + 1):
        words[" ".join(tmp[i : i + n])] += 1
    return words


def official_recall(pred, gt):
    candidate, reference = normalize_word(pred.lower()), normalize_word(gt.lower())
    cw, rw = split_sentence(candidate, 1), split_sentence(reference, 1)
    tp = fp = fn = 0
    for w in set(cw) | set(rw):
        if w in cw and w in rw:
            tp += cw[w]
        elif w in cw:
            fp += cw[w]
        elif w in rw:
            fn += rw[w]
    if len(cw) == 0 or len(rw) == 0 or tp == 0:
        return 0.0
    return tp / (tp + fn)


def official_closed(pred, gt):
    return float(normalize_word(gt.lower()) in normalize_word(pred.lower()))


# ------------------------------------------------------------------------------ pairs

REPLIES = ["Yes", "No.", "Not present.", "none", "yes, there is", "left", "the left lung",
           "There are two nodules", "dont know", "isn't present", "can't say", "cant say",
           "x-ray", "X - ray", "ct/mri", "(a) yes", "3.5 cm", "3.5cm.", "1,000", "e.g. pneumonia",
           "The answer is: right.", "right-sided", "edema; effusion", "lung lung", "", "won't",
           "that's it", "I'm sure"]  # fmt: skip
GOLDS = ["yes", "no", "0", "2", "left", "left lung", "x-ray", "ct/mri", "3.5 cm", "1000",
         "pneumonia", "effusion", "cant", "isnt", "wont", "", "?", "the", "thats"]  # fmt: skip


@pytest.mark.parametrize("gold", GOLDS)
def test_llava_med_scorer_agrees_with_the_official_code(gold):
    """The contraction table was skipped ("can't say" vs gold "cant") and a gold that
    normalizes to nothing ("?", "the") scored 0 where the official code scores 1."""
    for reply in REPLIES:
        assert llava_med_closed(reply, gold) == official_closed(reply, gold), (reply, gold)
        assert llava_med_recall(reply, gold) == pytest.approx(official_recall(reply, gold)), (
            reply,
            gold,
        )
