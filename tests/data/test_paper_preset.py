"""The paper preset puts exactly the paper's datasets and tasks in each stage, on small fake
ingested shards named as in the registry, and the card sets the build beside the paper."""

from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest

from healthgpt.data.mixture.build import build_mixture
from healthgpt.data.mixture.card import PAPER_TOTALS, paper_comparison_markdown, read_paper
from healthgpt.data.mixture.config import PRESETS, paper_preset, paper_sample_preset
from healthgpt.data.schema import new_record
from healthgpt.data.tasks import TASK_FAMILIES, TASKS
from healthgpt.paths import MANIFESTS_DIR
from tests.data.mixture_helpers import png, subset_groups, vqa, write_ingested

_seed = itertools.count(1000)


def _image(source, orig, kind, modality="X-Ray", **kw):
    return new_record(
        source=source,
        orig_id=orig,
        split=kw.pop("split", "train"),
        kind=kind,
        modality=modality,
        image=png(next(_seed)),
        **kw,
    )


def _turns(text):
    return [{"from": "human", "value": f"<image>\n{text}"}, {"from": "gpt", "value": "An answer."}]


def paper_sources(root):
    """One small shard per paper dataset, plus a dataset the paper does not use."""
    dirs = {}
    dirs["llava_558k"] = write_ingested(
        root,
        "llava_558k",
        # As the reader emits them: a caption prompt and its caption, kept as turns.
        [
            _image("llava_558k", f"v{i}", "conversation", conversations=_turns(f"Q{i}?"))
            for i in range(6)
        ],
    )
    dirs["pubmedvision"] = write_ingested(
        root,
        "pubmedvision",
        [
            _image("pubmedvision", f"p{i}", "conversation", conversations=_turns(f"P{i}?"))
            for i in range(4)
        ],
    )
    dirs["llava_med"] = write_ingested(
        root,
        "llava_med",
        [
            _image("llava_med", f"m{i}", "conversation", conversations=_turns(f"M{i}?"))
            for i in range(3)
        ],
    )
    for source in ("vqa_rad", "slake", "pathvqa"):
        dirs[source] = write_ingested(
            root,
            source,
            [
                vqa(source, "a", "train", png(next(_seed)), "Is it normal?", "yes", "closed"),
                vqa(source, "b", "train", png(next(_seed)), "What organ?", "liver", "open"),
                vqa(source, "c", "test", png(next(_seed)), "Is it big?", "no", "closed"),
            ],
        )
    dirs["mimic_cxr"] = write_ingested(
        root,
        "mimic_cxr",
        [
            _image(
                "mimic_cxr",
                f"r{i}",
                "report",
                body_part="chest",
                subject_id=f"s{i}",
                text=f"FINDINGS: f{i}. IMPRESSION: i{i}.",
                split="test" if i == 0 else "train",
            )
            for i in range(4)
        ],
    )
    dirs["ixi"] = write_ingested(
        root,
        "ixi",
        [
            _image("ixi", f"x{s}:{z}", "image", "MRI", subject_id=f"x{s}", body_part="brain")
            for s in range(8)
            for z in range(2)
        ],
    )
    dirs["synthrad2023"] = write_ingested(
        root,
        "synthrad2023",
        [
            _image(
                "synthrad2023",
                f"{s}:{z}",
                "pair",
                "MRI",
                target_image=png(next(_seed)),
                target_modality="CT",
                subject_id=f"y{s}",
                body_part="pelvis",
            )
            for s in range(8)
            for z in range(2)
        ],
    )
    generation = [
        ("super_resolution", "MRI", "MRI", "Increase the resolution of this image."),
        ("ct_to_mri", "CT", "MRI", "Convert this CT to MRI."),
        ("text_to_image", "X-Ray", "X-Ray", "Generate a chest X-ray: no findings."),
    ]
    dirs["vl_health_generation"] = write_ingested(
        root,
        "vl_health_generation",
        [
            _image(
                "vl_health_generation",
                f"g{task}{i}",
                "pair",
                src,
                target_image=png(next(_seed)),
                target_modality=dst,
                question=prompt,
                meta=json.dumps({"task": task}),
            )
            for task, src, dst, prompt in generation
            for i in range(2)
        ],
    )
    dirs["vl_health_reconstruction"] = write_ingested(
        root,
        "vl_health_reconstruction",
        [_image("vl_health_reconstruction", f"k{i}", "image", "CT") for i in range(3)],
    )
    # Not a paper dataset: the paper preset routes nothing from it.
    dirs["dicom_folder"] = write_ingested(
        root, "dicom_folder", [_image("dicom_folder", f"d{i}", "image", "CT") for i in range(3)]
    )
    return dirs


@pytest.fixture(scope="module")
def paper_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    dirs = paper_sources(root / "in")
    # The paper's full task list, at the samples' size (the fakes have distinct images).
    config = paper_sample_preset(tasks=list(TASKS), manifests_dir=str(MANIFESTS_DIR))
    summary = build_mixture(dirs, root / "mixture", config)
    return root / "mixture", summary


def test_each_stage_holds_exactly_the_papers_datasets_and_tasks(paper_build):
    mixture, _ = paper_build
    stage1, stage2, stage3 = (subset_groups(mixture, s) for s in ("stage1", "stage2", "stage3"))
    assert stage1 == {
        ("llava_558k", "conversation"),
        ("llava_558k", "reconstruction"),
        ("pubmedvision", "conversation"),
        ("vl_health_reconstruction", "reconstruction"),
    }
    assert stage2 and stage2 <= stage1
    assert stage3 == {
        *((s, t) for s in ("vqa_rad", "slake", "pathvqa") for t in ("vqa_choice", "vqa_open")),
        ("llava_med", "conversation"),
        ("pubmedvision", "conversation"),
        ("mimic_cxr", "report"),
        ("mimic_cxr", "text_to_image"),
        ("synthrad2023", "mri_to_ct"),
        ("synthrad2023", "ct_to_mri"),
        ("ixi", "super_resolution"),
        ("vl_health_generation", "super_resolution"),
        ("vl_health_generation", "ct_to_mri"),
        ("vl_health_generation", "text_to_image"),
    }
    assert {TASK_FAMILIES[t] for _, t in stage3} == {"comprehension", "generation"}
    assert not any(source == "dicom_folder" for source, _ in stage1 | stage3)


def test_released_generation_rows_keep_their_own_input_and_instruction(paper_build):
    mixture, _ = paper_build
    rows = [
        row
        for path in sorted((mixture / "stage3" / "data").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
        if row["source"] == "vl_health_generation"
    ]
    by_task = {row["task"]: row for row in rows}
    assert by_task["ct_to_mri"]["conversations"][0]["value"] == "<image>\nConvert this CT to MRI."
    assert by_task["text_to_image"]["image"] is None  # text in, image out
    assert by_task["text_to_image"]["conversations"][0]["value"].startswith("Generate a chest")
    assert all(row["conversations"][-1]["value"] == "<target_image>" for row in rows)
    assert "degradation" not in (by_task["super_resolution"]["meta"] or "")


def test_card_shows_the_build_beside_the_paper(paper_build):
    mixture, summary = paper_build
    card = (mixture / "README.md").read_text()
    assert "## Beside the paper" in card
    assert (
        f"{PAPER_TOTALS['comprehension']:,}" in card and f"{PAPER_TOTALS['generation']:,}" in card
    )
    line = next(row for row in card.splitlines() if row.startswith("| synthrad2023 |"))
    assert "stage3" in line and "not stated" in line and "pelvis" in line
    # A dataset without a registry `paper:` entry says so; one the build routed nothing from
    # and the paper does not name is not listed.
    beside = card[card.index("## Beside the paper") : card.index("## By source")]
    assert "| dicom_folder |" not in beside
    line = next(row for row in card.splitlines() if row.startswith("| llava_558k |"))
    assert "stage1, stage2" in line and "| stage1 |" in line and "not stated" in line
    bare = paper_comparison_markdown(summary, {})
    line = next(row for row in bare.splitlines() if row.startswith("| llava_558k |"))
    assert "no `paper:` entry" in line
    paper = read_paper(MANIFESTS_DIR)
    assert {"vqa_rad", "slake", "pathvqa", "mimic_cxr", "ixi", "synthrad2023"} <= set(paper)
    assert paper["mimic_cxr"]["family"] == ["comprehension", "generation"]
    table = paper_comparison_markdown(summary, {"lonely": {**paper["ixi"], "samples": 7}})
    assert "| lonely | - | - | 0 | generation | stage3 | 7 |" in table


def test_paper_presets_differ_only_in_size():
    full, small = paper_preset(), paper_sample_preset()
    assert full.stage2_size == 47_000 and small.stage2_size < 1_000
    assert small.generation_test_fraction > PRESETS["sample"]().generation_test_fraction
    for field in ("task_sources", "stage1_include", "stage3_include", "closed_question_style"):
        assert getattr(full, field) == getattr(small, field), field


def test_a_declared_task_outside_the_vocabulary_is_refused_with_its_reason():
    from healthgpt.data.mixture.tasks import AnswerSets, TaskContext, plan_record

    ctx = TaskContext(paper_preset(), AnswerSets())
    row = _image(
        "vl_health_generation",
        "odd",
        "pair",
        "CT",
        target_image=png(next(_seed)),
        target_modality="MRI",
        meta=json.dumps({"task": "ct2pet"}),
    )
    assert plan_record(row, "vl_health_generation", "train", ctx) == ([], "unknown_declared_task")
    text_only = _image(
        "vl_health_generation",
        "t2i",
        "image",
        question="Generate a chest X-ray.",
        meta=json.dumps({"task": "text_to_image"}),
    )
    planned, reason = plan_record(text_only, "vl_health_generation", "train", ctx)
    assert reason is None and [(p.task, p.input_col, p.output_col) for p in planned] == [
        ("text_to_image", None, "image")
    ]
    # A paper dataset not routed to a task yields nothing for it.
    assert plan_record(text_only, "ixi", "train", ctx) == ([], "no_task_for_kind")
