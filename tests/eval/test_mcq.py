import pytest

from healthgpt.eval.mcq import (
    Choice,
    LayoutError,
    OmniSkips,
    normalize_benchmark_modality,
    parse_choice,
    read_mmmu,
    read_omnimedvqa,
)
from healthgpt.eval.predict import TextItem, render_prompt
from healthgpt.eval.run import RunOptions, run_benchmarks
from tests.eval.fakes import FakeTextModel, write_mmmu, write_omnimedvqa

OPTIONS = ["Pneumonia", "Lung cancer", "Lung", "Normal"]


@pytest.mark.parametrize(
    ("reply", "letter", "rule"),
    [
        ("B", "B", "exact"),
        ("b", "B", "exact"),
        ("(C)", "C", "exact"),
        ("C.", "C", "exact"),
        ("D) Normal", "D", "explicit"),  # a leading "D)" declares the letter
        ("The answer is (b).", "B", "explicit"),
        ("Answer: D", "D", "explicit"),
        ("It looks like Option c", "C", "explicit"),
        ("I think it is B because of the opacity", "B", "letter"),
        ("**B**", "B", "letter"),
        ("The correct option is E, no wait, D", "D", "letter"),  # E is not an option here
        ("A lesion is seen: lung cancer", "B", "text"),  # "A lesion" is an article
        ("lung cancer", "B", "text"),  # contains "lung" too: the longest option wins
        ("Lung", "C", "text"),
        ("pneumonia.", "A", "text"),
        ("pneumonia or normal", "D", "text"),  # two options named: the last one
        ("I am not sure", None, "unparsed"),
        ("E", None, "unparsed"),
        ("", None, "unparsed"),
    ],
)
def test_parse_choice_on_messy_replies(reply, letter, rule):
    assert parse_choice(reply, OPTIONS) == Choice(letter, rule)


@pytest.mark.parametrize(
    ("label", "modality"),
    [
        ("CT(Computed Tomography)", "CT"),
        ("MR (Mag-netic Resonance Imaging)", "MRI"),
        ("X-Ray", "X-Ray"),
        ("Fundus Photography", "Fundus"),
        ("OCT (Optical Coherence Tomography", "OCT"),
        ("Dermoscopy", "Dermoscopy"),
        ("Microscopy Images", "Microscopy"),
        ("ultrasound", "Ultrasound"),
        ("['Microscopic Images']", "Microscopy"),
        ("Infrared Reflectance Imaging", "Other"),
        (None, "Other"),
    ],
)
def test_benchmark_modality_labels(label, modality):
    assert normalize_benchmark_modality(label) == modality


def test_mmmu_reader_on_the_hf_layout(tmp_path):
    items = list(read_mmmu(write_mmmu(tmp_path / "MMMU"), subjects=["Clinical_Medicine"]))
    assert [i.id for i in items] == [
        "validation_Clinical_Medicine_1",
        "validation_Clinical_Medicine_2",
        "validation_Clinical_Medicine_3",
    ]
    first, second, third = items
    assert (third.answer_type, third.answer, third.form) == ("open", "5", "short answer")
    assert first.options == ("Pneumonia", "Fracture", "Normal", "Edema")
    assert first.answer == "B" and first.group == "Clinical_Medicine"
    assert first.question == "Which finding is shown in (image 1)?"
    assert first.modality == "CT" and second.modality == "Microscopy"
    assert first.images[0][:4] == b"\x89PNG"
    assert len(list(read_mmmu(tmp_path / "MMMU", subjects=["Clinical_Medicine"], limit=1))) == 1


def test_mmmu_missing_layout_names_the_expected_one(tmp_path):
    with pytest.raises(LayoutError, match="Subject"):
        list(read_mmmu(tmp_path, subjects=["Pharmacy"]))


def test_omnimedvqa_reader_maps_gold_text_to_a_letter_and_reports_skips(tmp_path):
    skips = OmniSkips()
    items = list(read_omnimedvqa(write_omnimedvqa(tmp_path / "OmniMedVQA"), skips=skips))
    assert [(i.id, i.answer, i.modality) for i in items] == [
        ("ds_0", "B", "CT"),
        ("ds_1", "B", "Fundus"),
    ]
    assert items[1].options == ("Normal", "Glaucoma")
    assert skips.reasons == {"gt_answer matches no single option": 1, "image file missing": 1}


def test_omnimedvqa_missing_layout(tmp_path):
    with pytest.raises(LayoutError, match="QA information"):
        list(read_omnimedvqa(tmp_path))


def test_omnimedvqa_accuracy_modality_breakdown_and_unparsed(tmp_path):
    root = write_omnimedvqa(tmp_path / "OmniMedVQA")
    model = FakeTextModel({"What modality is used?": "B", "Is this fundus normal?": "maybe"})
    options = RunOptions(batch_size=4, limit=0, label="fake")
    done = run_benchmarks("mcq", lambda: model, {"omnimedvqa": root}, tmp_path / "out", options)
    summary = done.scores["omnimedvqa"]
    assert summary["accuracy"]["value"] == 50.0 and summary["accuracy"]["n"] == 2
    assert (summary["n"], summary["unparsed"], summary["random_choices"]) == (2, 1, 0)
    assert summary["macro_modality"] == 50.0
    assert {m: c["value"] for m, c in summary["by_modality"].items()} == {
        "CT": 100.0,
        "Fundus": 0.0,
    }


def test_omnimedvqa_unparseable_json_is_counted_not_fatal(tmp_path):
    root = write_omnimedvqa(tmp_path / "OmniMedVQA")
    (root / "QA information" / "Open-access" / "zz_broken.json").write_text('[{"question_id": ')
    skips = OmniSkips()
    assert len(list(read_omnimedvqa(root, skips=skips))) == 2
    assert skips.reasons["unparseable JSON row"] == 1


OPTIONS_4 = ("Vitamin D deficiency", "Iron deficiency", "Hypothyroidism", "Anemia")


@pytest.mark.parametrize("template", ["Answer: {} because the margins are smooth",
    "The answer is {} since the wall is thin", "Option {} is correct", "{} is correct",
    "I choose {} as the answer"])  # fmt: skip
@pytest.mark.parametrize("letter", list("ABCD"))
def test_declared_letter_a_is_not_an_article(template, letter):
    """A declared "A" was read as the article and the reply left unparsed."""
    assert parse_choice(template.format(letter), OPTIONS_4).letter == letter


@pytest.mark.parametrize(
    ("reply", "options", "letter"),
    [
        ("The answer is (C), since anemia would show pallor.", OPTIONS_4, "C"),
        ("(C) Hypothyroidism; iron deficiency does not explain the findings.", OPTIONS_4, "C"),
        ("(A) - no doubt about it", ("yes", "no"), "A"),
        ("The answer is A because there is no fracture", ("yes", "no"), "A"),
        ("It is not anemia.", OPTIONS_4, None),  # a negated mention picks nothing
        ("Anemia, not iron deficiency", OPTIONS_4, "D"),
        ("A. yes\nB. no", ("yes", "no"), None),  # the option list echoed back
        ("Vitamin D deficiency", OPTIONS_4, "A"),
    ],
)
def test_declared_letter_beats_option_text(reply, options, letter):
    """Option text anywhere in the reply used to win over the letter the reply declared."""
    assert parse_choice(reply, options).letter == letter


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("I'd pick b", "B"),
        ("The answer is b because of the rim", "B"),
        ("answer: c", "C"),
        ("The answer is a benign cyst", None),
    ],  # fmt: skip
)
def test_lowercase_declared_letter(reply, letter):
    """Lower-case declared letters were unparsed; the article "a" in prose stays no letter."""
    assert parse_choice(reply, ("CT", "MRI", "X-ray", "Ultrasound")).letter == letter


def test_more_options_than_letters_is_an_error_not_a_silent_cut():
    """Options beyond J could be neither asked nor parsed: they were silently never chosen."""
    options = tuple(f"option {i}" for i in range(11))
    item = TextItem("q", "omnimedvqa", "Which?", "K", "choice", options=options)
    with pytest.raises(ValueError, match="at most 10"):
        render_prompt(item)
    with pytest.raises(ValueError, match="at most 10"):
        parse_choice("K", options)
    assert parse_choice("(j)", options[:10]).letter == "J"
