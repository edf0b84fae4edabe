"""Decontamination against the evaluation splits, subject-level held-out splits, leak check."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from healthgpt.data.mixture.build import INDEX_SCHEMA
from healthgpt.data.mixture.checks import check_no_leakage
from healthgpt.data.mixture.config import MixtureConfig, paper_preset, paper_sample_preset
from healthgpt.data.mixture.decontam import (
    EVAL_EXACT,
    EVAL_NEAR,
    effective_split,
    find_contaminated,
    is_held_out,
)
from healthgpt.data.mixture.dedup import near_pairs
from healthgpt.data.mixture.tasks import question_key
from healthgpt.data.schema import stable_id
from healthgpt.data.shards import ShardInfo, read_manifest, write_manifest
from tests.data.mixture_helpers import (
    build_standard,
    near_copy,
    plant_shard,
    png,
    shared_build,
    vqa,
)


@pytest.fixture(scope="module")
def standard_build(tmp_path_factory):
    return shared_build(tmp_path_factory)


def by_record(rows):
    return {r["record_id"]: r for r in rows}


def test_vqa_rad_train_questions_on_test_images_are_removed(standard_build):
    removed = standard_build.removed_table.filter(pl.col("reason") == EVAL_EXACT)
    eval_rows = standard_build.rows("eval")
    eval_ids = {r["id"]: r for r in eval_rows}
    # q1 and q2 (train) are asked about image A, which VQA-RAD's test question q3 also uses.
    assert removed.height == 2 and set(removed["source"]) == {"vqa_rad"}
    for matched in removed["matched_id"]:
        assert eval_ids[matched]["source"] == "vqa_rad" and eval_ids[matched]["split"] == "test"
    assert set(removed["id"]).isdisjoint(r["id"] for r in standard_build.rows("stage3"))


def test_near_duplicate_of_a_test_image_in_another_source_is_removed(standard_build):
    removed = standard_build.removed_table.filter(pl.col("reason") == EVAL_NEAR)
    assert removed["source"].to_list() == ["slake"]
    assert removed["task"].to_list() == ["vqa_open"]


def test_no_subject_is_in_both_train_and_held_out_test(standard_build):
    subjects = defaultdict(set)
    for subset in ("stage1", "stage2", "stage3", "eval"):
        for row in standard_build.rows(subset, ["source", "subject_id", "split"]):
            if row["source"] in ("ixi", "synthrad2023"):
                subjects[(row["source"], row["subject_id"])].add(row["split"])
    assert subjects, "the fixture has generation subjects"
    assert all(len(splits) == 1 for splits in subjects.values())
    held_out = {s for s, splits in subjects.items() if splits == {"test"}}
    assert held_out and len(held_out) < len(subjects)


def test_all_slices_of_a_subject_share_its_split():
    records = [
        {"id": f"r{z}", "split": "train", "subject_id": "subj7", "orig_path": f"v{z}.nii"}
        for z in range(20)
    ]
    splits = {effective_split(r, "ixi", ["ixi"], "salt", 0.5) for r in records}
    assert len(splits) == 1
    # Without a subject id the original volume decides; the official split is kept elsewhere.
    volume = [{**r, "subject_id": None, "orig_path": "one.nii"} for r in records]
    assert len({effective_split(r, "ixi", ["ixi"], "salt", 0.5) for r in volume}) == 1
    assert effective_split(records[0], "vqa_rad", ["ixi"], "salt", 0.99) == "train"


def test_held_out_fraction_is_respected_and_deterministic():
    held = [is_held_out("ixi", f"subject{i}", "salt", 0.1) for i in range(20_000)]
    assert 0.09 < sum(held) / len(held) < 0.11
    assert held == [is_held_out("ixi", f"subject{i}", "salt", 0.1) for i in range(20_000)]


def test_leak_check_passes_on_the_build(standard_build):
    passed, details = check_no_leakage(standard_build.out)
    assert passed, details
    assert details["checked"] > 0 and details["eval_images"] > 0


def test_leak_check_catches_a_planted_eval_image(standard_build, tmp_path):
    out = tmp_path / "mixture"
    shutil.copytree(standard_build.out, out)
    leaked = dict(standard_build.rows("eval")[0])
    leaked.update(id="planted", split="train")
    plant_shard(out, "stage3", "planted", [leaked])
    passed, details = check_no_leakage(out)
    assert not passed and details["examples"][0]["id"] == "planted"


def test_without_decontamination_the_leak_check_fails(tmp_path):
    built = build_standard(tmp_path, decontaminate=False)
    assert not any(r.startswith("eval_") for r in built.summary.removed)
    passed, details = check_no_leakage(built.out)
    assert not passed
    assert {"exact_image", "near_duplicate_image"} <= set(details["leaks"])


# --- decontamination by question -------------------------------------------------------------

PHASH = 0x0F0F_0F0F_F0F0_F0F0
FAR = ~PHASH & (2**64 - 1)


def hand_index(rows: list[tuple]) -> pl.DataFrame:
    """An index of (source, split, image key, phash, question) rows; seq is the position."""
    columns: dict[str, list] = {name: [] for name in INDEX_SCHEMA}
    for seq, (source, split, key, phash, question) in enumerate(rows):
        values = {
            "seq": seq,
            "source": source,
            "split": split,
            "task": "vqa_open" if question is not None else "reconstruction",
            "img_key": key,
            "img_phash": phash,
            "text_key": seq,
            "question_key": question,
        }
        for name in INDEX_SCHEMA:
            columns[name].append(values.get(name, 0 if name.startswith("rank") else None))
    return pl.DataFrame(columns, schema=INDEX_SCHEMA)


def test_by_question_sources_match_on_the_image_and_the_question():
    asked, other = question_key("Is this normal?"), question_key("What organ is shown?")
    index = hand_index(
        [
            ("vqa_rad", "test", 1, PHASH, asked),  # 0: the evaluation question
            ("vqa_rad", "train", 1, PHASH, other),  # 1: another question on its image
            ("vqa_rad", "train", 1, PHASH, asked),  # 2: the same question on its image
            ("vqa_rad", "train", 9, PHASH ^ 1, asked),  # 3: ... on a near-duplicate
            ("vqa_rad", "train", 1, PHASH, None),  # 4: not a question: the image decides
            ("slake", "train", 1, PHASH, other),  # 5: another source: the image decides
            ("vqa_rad", "train", 7, FAR, asked),  # 6: the same question, another image
        ]
    )
    near = near_pairs(np.array([PHASH, PHASH ^ 1, FAR], dtype=np.uint64), 4)
    removed = find_contaminated(index, near, ["test"], by_question=["vqa_rad"])
    assert removed.rows() == [
        (2, EVAL_EXACT, 0),
        (3, EVAL_NEAR, 0),
        (4, EVAL_EXACT, 0),
        (5, EVAL_EXACT, 0),
    ]
    by_image = find_contaminated(index, near, ["test"])
    assert by_image["seq"].to_list() == [1, 2, 3, 4, 5]


def test_by_question_holds_dataset_names_and_the_paper_sets_it_for_vqa_rad():
    assert paper_preset().decontaminate_by_question == ["vqa_rad"]
    assert paper_sample_preset().decontaminate_by_question == ["vqa_rad"]
    assert MixtureConfig().decontaminate_by_question == []
    for bad in ("vqa_rad/vqa_open", "*", ""):
        with pytest.raises(ValueError, match="decontaminate_by_question"):
            MixtureConfig(decontaminate_by_question=[bad])


# VQA-RAD's test question q3 again (case and spacing aside) on its image A, and on a rescaled
# copy of A: the training questions the by-question rule must still remove.
REPEATED = [
    vqa("vqa_rad", "q10", "train", png(1), "is this  NORMAL?", "no", "closed", "ABN"),
    vqa("vqa_rad", "q11", "train", near_copy(1), "Is this normal?", "no", "closed", "ABN"),
]


@pytest.fixture(scope="module")
def by_question_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("by_question")
    return build_standard(root, extra={"vqa_rad": REPEATED}, decontaminate_by_question=["vqa_rad"])


def names(source: str, *orig_ids: str) -> dict[str, str]:
    """record id -> original id."""
    return {stable_id(source, orig): orig for orig in orig_ids}


def test_by_question_keeps_other_questions_on_test_images(by_question_build):
    origs = {**names("vqa_rad", *(f"q{i}" for i in range(1, 12))), **names("slake", "s1")}
    removed = by_question_build.removed_table.filter(pl.col("reason").str.starts_with("eval_"))
    # q1 and q2 ask other questions than q3 about image A: kept. SLAKE's s1 shows a copy of
    # test image C: SLAKE is decontaminated by image still.
    assert {origs[r]: reason for r, reason in removed.select("record_id", "reason").rows()} == {
        "q10": EVAL_EXACT,
        "q11": EVAL_NEAR,
        "s1": EVAL_NEAR,
    }
    eval_origs = {r["id"]: origs.get(r["record_id"]) for r in by_question_build.rows("eval")}
    matched = {origs[r]: eval_origs[m] for r, m in removed.select("record_id", "matched_id").rows()}
    assert matched == {"q10": "q3", "q11": "q3", "s1": "q9"}
    trained = {origs.get(r["record_id"]) for r in by_question_build.rows("stage3")}
    assert {"q1", "q2"} <= trained and not {"q10", "q11", "s1"} & trained
    card = (by_question_build.out / "README.md").read_text()
    assert "For vqa_rad, a training question is removed only when" in card


def test_leak_check_follows_the_by_question_rule(by_question_build, tmp_path):
    passed, details = check_no_leakage(by_question_build.out)
    assert passed, details
    assert details["by_question"] == ["vqa_rad"]
    out = tmp_path / "mixture"
    shutil.copytree(by_question_build.out, out)
    # The evaluation question itself, as a training row: a leak whatever the rule.
    q3 = next(
        r for r in by_question_build.rows("eval") if r["record_id"] == stable_id("vqa_rad", "q3")
    )
    plant_shard(out, "stage3", "planted", [{**q3, "id": "planted", "split": "train"}])
    passed, details = check_no_leakage(out)
    assert not passed and details["examples"] == [
        {"subset": "stage3", "id": "planted", "reason": "exact_image", "eval_id": q3["id"]}
    ]


def rewrite_config(mixture, **changes) -> None:
    """Change the config a built mixture's manifest records (what its checks read)."""
    manifest = read_manifest(mixture)
    manifest["config"].update(changes)
    shards = [ShardInfo(**s) for s in manifest.pop("shards")]
    write_manifest(mixture, shards, **manifest)


def test_leak_check_reads_the_rule_from_the_manifest(by_question_build, tmp_path):
    out = tmp_path / "mixture"
    shutil.copytree(by_question_build.out, out)
    rewrite_config(out, decontaminate_by_question=[])
    passed, details = check_no_leakage(out)
    # Without the rule, q1 and q2 (image A, other questions than q3) are leaks.
    assert not passed and details["leaks"] == {"exact_image": 2}


def test_leak_check_compares_with_the_splits_the_build_decontaminates_against(
    standard_build, tmp_path
):
    out = tmp_path / "mixture"
    shutil.copytree(standard_build.out, out)
    # SLAKE's s3 is a validation question: in the eval subset, but not an `eval_splits` one.
    s3 = next(r for r in standard_build.rows("eval") if r["record_id"] == stable_id("slake", "s3"))
    assert s3["split"] == "validation"
    plant_shard(out, "stage3", "planted", [{**s3, "id": "planted", "split": "train"}])
    passed, details = check_no_leakage(out)
    assert passed and details["eval_splits"] == ["test"]
    rewrite_config(out, eval_splits=["test", "validation"])
    passed, details = check_no_leakage(out)
    assert not passed and details["examples"][0]["id"] == "planted"


def test_vqa_samples_keep_their_question_in_meta(by_question_build):
    for row in by_question_build.rows("stage3", ["task", "meta", "conversations"]):
        question = json.loads(row["meta"] or "{}").get("question")
        if row["task"].startswith("vqa_"):
            assert question and question in row["conversations"][0]["value"]
        else:
            assert question is None
