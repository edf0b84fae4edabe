import pytest

from healthgpt.eval.normalize import (
    contains_phrase,
    first_yes_no,
    normalize_answer,
    token_recall,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("YES!", "yes"),
        ("  yes  ", "yes"),
        ("Ｙｅｓ", "yes"),  # full-width, NFKC
        ("The left lung", "left lung"),
        ("an MRI", "mri"),
        ("A", ""),  # an article alone normalizes away
        ("two", "2"),
        ("Two lesions", "2 lesions"),
        ("twenty", "20"),
        ("ninety", "90"),
        ("none", "none"),  # not a number: a medical answer
        ("no", "no"),
        ("3.5 cm", "3.5 cm"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("end.", "end"),
        ("x-ray", "x ray"),
        ("T2-weighted", "t2 weighted"),
        ("patient's", "patients"),
        ("don’t", "dont"),  # curly apostrophe
        ("Right kidney (upper pole)", "right kidney upper pole"),
        ("yes/no", "yes no"),
        ("multiple   spaces\there", "multiple spaces here"),
        ("肝脏", "肝脏"),
        ("", ""),
        (None, ""),
        (5, "5"),
    ],
)
def test_normalization_table(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_yes_variants_all_compare_equal():
    assert {normalize_answer(v) for v in ("yes", "Yes", "yes.", "YES", " Yes. ")} == {"yes"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("yes there is", "yes"), ("there is no mass", "no"), ("unclear", None), ("noted", None)],
)
def test_first_yes_no_takes_whole_words(reply, expected):
    assert first_yes_no(reply) == expected


def test_token_recall_counts_reference_words_with_multiplicity():
    assert token_recall("left kidney", "left kidney") == 1.0
    assert token_recall("kidney", "left kidney") == 0.5
    assert token_recall("mass mass", "mass mass mass") == pytest.approx(2 / 3)
    assert token_recall("anything", "") == 0.0


def test_contains_phrase_respects_word_boundaries():
    assert contains_phrase("left lower lobe", "lower lobe")
    assert not contains_phrase("leftover", "left")
    assert not contains_phrase("left", "")
