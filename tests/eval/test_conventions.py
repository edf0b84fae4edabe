"""The evaluation's conventions, one test per defect the comparability audit found:
question form, OMVQA denominator, MMMU denominator and scorer, the two VQA scorers, the
multiple-choice parser, and the report (the metrics' data range is in test_metrics)."""

import pyarrow.parquet as pq
import pytest

from healthgpt.data.mixture.build import build_mixture
from healthgpt.data.mixture.config import demo_preset, paper_preset
from healthgpt.data.mixture.tasks import IMAGE_TOKEN, TARGET_IMAGE_TOKEN
from healthgpt.eval import registry
from healthgpt.eval.generation import GENERATION_TASKS, read_pairs
from healthgpt.eval.mcq import McqTally, parse_choice, read_mmmu, score_mmmu
from healthgpt.eval.predict import LETTERS, TextItem, render_prompt
from healthgpt.eval.report import render_report, table1_values
from healthgpt.eval.run import RunOptions, run_benchmarks
from healthgpt.eval.vqa import read_vqa_items, score_llava_med, score_vqa, vqa_scorer
from tests.data.mixture_helpers import standard_sources
from tests.eval.fakes import FakeTextModel, gray, png, write_mmmu

OPTIONS = RunOptions(batch_size=4, limit=0, label="fake")

# ------------------------------------------------------------- 1. the trained form


@pytest.fixture(scope="module", params=["demo", "paper"])
def built(request, tmp_path_factory):
    """The bundled-style sources and a mixture built from them under each preset."""
    root = tmp_path_factory.mktemp(request.param)
    dirs = standard_sources(root / "ingested")
    preset = {"demo": demo_preset, "paper": paper_preset}[request.param]
    config = preset(workers=1, stage2_size=8)
    build_mixture(dirs, root / "mixture", config)
    return request.param, dirs, root / "mixture", config


def _held_out(mixture):
    return [
        row
        for path in sorted((mixture / "eval" / "data").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def test_evaluation_asks_each_held_out_question_in_the_form_its_task_trains(built):
    """Defect 1: under both presets, every held-out comprehension sample of the mixture is
    asked with exactly its training prompt (single choice under the paper preset), and every
    generation pair with its own instruction."""
    name, dirs, mixture, config = built
    rows = _held_out(mixture)
    vqa_rows = [r for r in rows if r["task"].startswith("vqa_") and r["split"] == "test"]
    assert vqa_rows, "the fixture must hold out VQA samples"
    checked = set()
    for source in {r["source"] for r in vqa_rows}:
        items = {i.id: i for i in read_vqa_items(dirs[source], source, trained=config)}
        for row in (r for r in vqa_rows if r["source"] == source):
            item = items[row["record_id"]]
            human, answer = (turn["value"] for turn in row["conversations"])
            assert render_prompt(item) == human.removeprefix(f"{IMAGE_TOKEN}\n"), row["task"]
            if row["task"] == "vqa_choice":
                assert item.form == "single choice"
                assert item.options[LETTERS.index(answer)] == item.answer.lower()
            else:
                assert item.form == "plain" and answer == item.answer
            checked.add(row["task"])
    closed = {"demo": "vqa_closed", "paper": "vqa_choice"}[name]
    assert closed in checked and "vqa_open" in checked
    assert closed in config.built_tasks()
    pairs = list(read_pairs(mixture / "eval"))
    for pair in pairs:
        row = next(r for r in rows if r["id"] == pair.id)
        human = row["conversations"][0]["value"]
        for placeholder in (IMAGE_TOKEN, TARGET_IMAGE_TOKEN):
            human = human.replace(placeholder, "")
        assert pair.instruction == human.strip()
    held_out_generation = {r["task"] for r in rows if r["task"] in GENERATION_TASKS}
    assert {p.task for p in pairs} == held_out_generation


def test_a_letter_reply_to_a_single_choice_question_is_scored_by_its_option():
    """Defect 1: `score_closed("A", "yes")` was 0 for a model answering in its trained form."""
    options = ("yes", "no")
    item = TextItem("q", "vqa_rad", "Is this normal?", "no", "closed", options=options)
    assert score_vqa(item, "B").score == 1.0 and score_llava_med(item, "B") == 1.0
    assert score_vqa(item, "A").score == 0.0 and score_llava_med(item, "A") == 0.0


# ---------------------------------------------------------- 2. OMVQA denominator


def _cell(value, n=50):
    return {"value": value, "n": n, "ci": [value - 1, value + 1]}


def test_omvqa_is_the_mean_of_the_papers_table9_columns_and_the_rest_is_labelled():
    """Defect 2: fundus, dermoscopy, endoscopy and infrared have no Table 9 column; the old
    value (the mean over every modality) moved with them."""
    by_modality = {"CT": _cell(60.0), "X-Ray": _cell(80.0), "Fundus": _cell(0.0)}
    by_modality |= {"Dermoscopy": _cell(0.0), "Endoscopy": _cell(0.0)}
    omni = {"accuracy": _cell(28.0), "macro_modality": 28.0, "by_modality": by_modality}
    omni |= {"n": 250, "unparsed": 0}
    mcq = {"model": "m", "benchmarks": {"omnimedvqa": omni}, "notes": []}
    assert table1_values(None, mcq)[7]["value"] == 70.0  # (60 + 80) / 2 columns present
    report = render_report(None, mcq, None)
    assert "[2 of 7 columns; not comparable with the paper]" in report
    assert "All-modality mean over every modality this run evaluated" in report
    assert "(not the paper's definition): 28.0" in report


# ---------------------------------------------------------- 3. MMMU-Med


def test_mmmu_reads_every_question_every_image_and_image_options(tmp_path):
    """Defect 3: the open question was dropped, only image_1 was shown, `<image n>` stayed
    in the options."""
    root = write_mmmu(tmp_path / "MMMU")
    import pyarrow as pa

    path = root / "Clinical_Medicine" / "validation-00000-of-00001.parquet"
    table = pq.read_table(path).to_pylist()
    table[0]["image_2"] = {"bytes": png(gray(8, 16)), "path": "image_2.png"}
    table[0]["options"] = str(["<image 1>", "<image 2>", "Normal", "Edema"])
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(path)), path)
    items = list(read_mmmu(root))
    assert len(items) == 3 and items[2].answer_type == "open"
    assert items[0].options[:2] == ("(image 1)", "(image 2)")
    assert len(items[0].images) == 2

    seen = []

    class Recording(FakeTextModel):
        def generate_text(self, images, prompts):
            seen.extend(images)
            return super().generate_text(images, prompts)

    model = Recording({"Give the dose in mg.": "The dose is 5 mg."})
    done = run_benchmarks("mcq", lambda: model, {"mmmu_med": root}, tmp_path / "o", OPTIONS)
    # both images, side by side at the common height (32), under a 14-pixel label strip
    assert seen[0].size == (32 + 32, 32 + 14) and seen[1].size == (32, 32)
    summary = done.scores["mmmu_med"]
    assert summary["n"] == 3 and summary["n_open"] == 1
    rows = pq.read_table(tmp_path / "o" / done.shards[0].path).to_pylist()
    assert [r["n_images"] for r in rows] == [2, 1, 1]
    assert rows[2]["score"] == 1.0  # "5" found by MMMU's open-answer parser
    assert summary["random_choices"] == 2  # "no idea" twice: seeded random options
    report = render_report(None, {"benchmarks": done.scores}, None)
    assert "MMMU-Med: 3 questions (1 open" in report
    assert "The paper's denominator is 150 questions; this run read 3" in report


def test_mmmu_unparsed_reply_gets_a_seeded_random_option_counted():
    item = TextItem("validation_Pharmacy_7", "mmmu_med", "q?", "C", "choice", options=tuple("wxyz"))
    first, again = score_mmmu(item, "I cannot tell"), score_mmmu(item, "I cannot tell")
    assert first.rule == "random" and first.parsed in "ABCD" and first == again
    tally = McqTally()
    tally.add(item, first)
    assert tally.summary()["random_choices"] == 1 and tally.summary()["unparsed"] == 1


@pytest.mark.parametrize(
    ("answer", "reply", "correct"),
    [
        ("5", "The dose is 5 mg.", True),
        ("5", "The dose is 15 mg.", False),  # numbers compare as numbers
        ("1,000", "so the answer is 1000", True),
        ("['3', '3.0']", "3.0", True),  # a gold list accepts any
        ("insulin", "The drug is insulin.", True),  # a string gold in the key response
        ("insulin", "Therefore insulin is given.", False),  # MMMU reads the tail after "is "
        ("b", "abc", False),  # a one-character gold is padded with a space: not inside a word
        ("A", "The answer is 2 =", True),  # an empty tail after "=" leaves the whole reply
    ],
)
def test_mmmu_open_questions_are_scored_like_mmmus_eval_open(answer, reply, correct):
    item = TextItem("id", "mmmu_med", "q", answer, "open", form="short answer")
    assert score_mmmu(item, reply).score == float(correct)


# ------------------------------------------------------------- 4. two VQA scorers


@pytest.mark.parametrize(
    ("reply", "gold", "answer_type", "strict", "llava_med"),
    [
        ("Not present.", "no", "closed", 0.0, 1.0),  # "no" is a substring of "not"
        ("none", "0", "open", 0.0, 1.0),  # LLaVA-Med reads "none" as 0
        ("Yes, there is.", "yes", "closed", 1.0, 1.0),
        ("right", "left", "closed", 0.0, 0.0),
        ("The kidney", "left kidney", "open", 0.5, 0.5),
        ("lung lung", "left lung", "open", 0.5, 2 / 3),  # its recall counts reply repeats
    ],
)
def test_strict_and_llava_med_scores_side_by_side(reply, gold, answer_type, strict, llava_med):
    item = TextItem("q", "vqa_rad", "Is it?", gold, answer_type)
    scored = vqa_scorer(item, reply)
    assert scored.score == pytest.approx(strict)
    assert scored.score_llava_med == pytest.approx(llava_med)


def test_both_scorers_are_in_the_predictions_and_the_report(tmp_path):
    from tests.eval.fakes import VQA_CASES, vqa_replies, write_ingested_vqa

    sources = {"vqa_rad": write_ingested_vqa(tmp_path, "vqa_rad", VQA_CASES["vqa_rad"])}
    model = FakeTextModel(vqa_replies())
    done = run_benchmarks("vqa", lambda: model, sources, tmp_path / "out", OPTIONS)
    rows = pq.read_table(tmp_path / "out" / done.shards[0].path).to_pylist()
    assert all(r["score_llava_med"] is not None and r["source"] == "vqa_rad" for r in rows)
    report = render_report({"model": "m", "benchmarks": done.scores, "notes": []}, None, None)
    assert "LLaVA-Med scorer |" in report and "strict scorer |" in report
    assert "is the one to compare with the paper" in report


# ------------------------------------------------------------- 5. the parser

OPTIONS_1 = ["Malignant tumour", "Benign cyst", "Abscess", "Normal"]
OPTIONS_2 = ["Vitamin D deficiency", "Rickets", "Scurvy", "Anaemia"]


@pytest.mark.parametrize(
    ("reply", "options", "letter"),
    [
        # the audit's failures
        ("The correct choice is a benign cyst.", OPTIONS_1, "B"),  # not the article "a"
        ("Vitamin D deficiency", OPTIONS_2, "A"),  # option text before the letter D
        ("I think C or D, most likely D", OPTIONS_1, "D"),  # the last explicit choice
        ("The correct choice is a.", OPTIONS_1, "A"),  # a lone letter after "choice is"
        # MMMU's own parsing cases (parse_multi_choice_response)
        ("(B)", OPTIONS_1, "B"),  # bracketed letter
        ("The answer is (C).", OPTIONS_1, "C"),
        ("I first thought (A) but (D) is right", OPTIONS_1, "D"),  # the last bracketed one
        ("B", OPTIONS_1, "B"),  # a bare letter
        ("It is option C", OPTIONS_1, "C"),
        ("The image shows a benign cyst in the liver", OPTIONS_1, "B"),  # option content
        ("There is an abscess here and not a tumour at all", OPTIONS_1, "C"),
        ("I am not sure what this shows", OPTIONS_1, None),  # MMMU: random; here: unparsed
    ],
)
def test_parser_on_the_audit_failures_and_mmmus_cases(reply, options, letter):
    assert parse_choice(reply, options).letter == letter


# ------------------------------------------------------------- 7. the report


def test_report_names_no_model_for_a_family_that_ran_nothing_and_prints_each_note_once():
    loaded = "checkpoint x into preset 'tiny': 10 tensors"
    vqa = {"model": "stage3 checkpoint", "benchmarks": {}, "notes": [loaded], "summary": ""}
    mcq = {"model": "stage3 checkpoint", "benchmarks": {}, "notes": [loaded, "x not configured"]}
    report = render_report(vqa, mcq, None)
    assert "stage3 checkpoint" not in report
    assert "- multiple choice: nothing evaluated (see the notes)" in report
    assert report.count(loaded) == 1


def test_registry_entries_are_what_the_pipeline_loops_over():
    from pipelines.evaluation import TextEvalConfig, eval_vqa

    names = [b.name for b in registry.BENCHMARKS]
    assert names == ["vqa_rad", "slake", "pathvqa", "mmmu_med", "omnimedvqa"]
    assert {k.path[-1] for k in eval_vqa.dependency_keys} >= {"vqa_rad", "slake", "pathvqa"}
    assert [b.name for b in TextEvalConfig(benchmarks=["slake"]).selected("vqa")] == ["slake"]
    assert registry.get("mmmu_med").env == "HEALTHGPT_MMMU_DIR"
    with pytest.raises(KeyError, match="unknown benchmark 'vqarad'"):
        TextEvalConfig(benchmarks=["vqarad"]).selected("vqa")
