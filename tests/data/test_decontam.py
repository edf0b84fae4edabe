"""Decontamination against the evaluation splits, subject-level held-out splits, leak check."""

from __future__ import annotations

import shutil
from collections import defaultdict

import polars as pl
import pytest

from healthgpt.data.mixture.checks import check_no_leakage
from healthgpt.data.mixture.decontam import EVAL_EXACT, EVAL_NEAR, effective_split, is_held_out
from tests.data.mixture_helpers import build_standard, plant_shard, shared_build


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
