"""The mixture end to end: layout, HF loading, determinism, sampling, checks, card, export."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest

from healthgpt.data.mixture.build import SUBSETS, build_mixture, sample_preset
from healthgpt.data.mixture.checks import (
    check_images_present,
    check_ratios,
    check_tasks_present,
)
from healthgpt.data.mixture.config import paper_preset
from healthgpt.data.mixture.export import export_llava
from healthgpt.data.mixture.tasks import TARGET_IMAGE_TOKEN
from healthgpt.data.schema import SAMPLE_SCHEMA
from healthgpt.data.shards import read_manifest
from healthgpt.storage import file_sha256
from tests.data.mixture_helpers import build_standard, plant_shard, shared_build, standard_sources


@pytest.fixture(scope="module")
def standard_build(tmp_path_factory):
    return shared_build(tmp_path_factory)


def test_layout_and_summary(standard_build):
    out, summary = standard_build.out, standard_build.summary
    for subset in SUBSETS:
        assert list((out / subset / "data").glob("*.parquet")), subset
    assert {p.name for p in (out / "eval" / "data").glob("*.parquet")} == {
        "test-00000.parquet",
        "validation-00000.parquet",
    }
    assert (out / "removed.parquet").is_file() and (out / "README.md").is_file()
    manifest = read_manifest(out)
    samples = [s for s in manifest["shards"] if not s["path"].startswith("images/")]
    assert sum(s["rows"] for s in samples) == sum(summary.rows(s) for s in SUBSETS)
    assert pq.read_schema(next((out / "stage3" / "data").glob("*.parquet"))).names == (
        SAMPLE_SCHEMA.names
    )
    assert summary.removed["multi_image"] == 1
    assert summary.counts["stage3"]["task_family"].keys() == {"comprehension", "generation"}
    assert set(summary.counts["stage1"]["task"]) <= {"caption", "report", "reconstruction"}
    # Stage 2 is drawn from stage 1.
    stage1_ids = {r["id"] for r in standard_build.rows("stage1", ["id"])}
    assert {r["id"] for r in standard_build.rows("stage2", ["id"])} <= stage1_ids


def test_images_are_stored_once_and_referenced(standard_build):
    out = standard_build.out
    images = pq.read_table(out / "images" / "data" / "images-00000.parquet").to_pylist()
    names = [row["sha256"] for row in images]
    assert len(names) == len(set(names))
    for row in images:
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == row["sha256"]
    referenced = set()
    for subset in SUBSETS:
        for path in (out / subset / "data").glob("*.parquet"):
            for row in pq.read_table(path, columns=["image", "target_image"]).to_pylist():
                for value in row.values():
                    if value:
                        assert value["bytes"] is None and value["path"].startswith("sha256:")
                        referenced.add(value["path"].removeprefix("sha256:"))
    assert referenced == set(names)
    # The images a sample uses come back with `resolve_images` (`Built.rows` uses it).
    by_name = {row["sha256"]: row["image"]["bytes"] for row in images}
    stage3 = standard_build.rows("stage3", ["task", "image", "target_image"])
    pair = next(r for r in stage3 if r["task"] == "mri_to_ct")
    assert pair["image"]["bytes"] in by_name.values() and pair["target_image"]["bytes"]


def test_training_loader_gets_image_bytes(standard_build):
    from healthgpt.train.data import iter_rows, split_files

    files = split_files(standard_build.out / "stage3", "train")
    rows = list(iter_rows(files, ["task_family", "target_image"], "generation"))
    assert rows and all(row["target_image"]["bytes"].startswith(b"\x89PNG") for row in rows)
    from healthgpt.train.validation import held_out_rows

    [held_out] = held_out_rows(standard_build.out / "stage3", 1, "comprehension")
    assert held_out["image"]["bytes"].startswith(b"\x89PNG")


def test_hf_load_names_splits_and_joins_images(standard_build):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    evals = datasets.load_dataset("parquet", data_dir=str(standard_build.out / "eval" / "data"))
    assert set(evals) == {"test", "validation"}
    stage3 = datasets.load_dataset("parquet", data_dir=str(standard_build.out / "stage3" / "data"))
    assert list(stage3) == ["train"]
    generation = stage3["train"].filter(lambda row: row["task"] == "mri_to_ct")
    row = generation[0]
    # The card's two-line join.
    data_dir = str(standard_build.out / "images" / "data")
    images = datasets.load_dataset("parquet", data_dir=data_dir, split="train")
    png = dict(zip(images["sha256"], images["image"], strict=True))
    for key in ("image", "target_image"):
        data = png[row[key]["path"].removeprefix("sha256:")]["bytes"]
        assert Image.open(io.BytesIO(data)).size[0] > 0
    assert row["conversations"][-1]["value"] == TARGET_IMAGE_TOKEN
    by_config = datasets.load_dataset(str(standard_build.out), "eval")
    assert set(by_config) == {"test", "validation"}


def test_build_is_byte_identical_when_repeated(tmp_path, standard_build):
    again = build_standard(tmp_path)
    first, second = read_manifest(standard_build.out), read_manifest(again.out)
    assert first["shards"] == second["shards"]
    for shard in second["shards"]:
        assert file_sha256(again.out / shard["path"]) == shard["sha256"]
    for name in ("removed.parquet", "README.md"):
        assert file_sha256(again.out / name) == file_sha256(standard_build.out / name)


def test_output_does_not_depend_on_the_number_of_workers(tmp_path, standard_build):
    parallel = build_mixture(
        standard_build.dirs, tmp_path / "m", sample_preset(workers=2, batch_rows=8)
    )
    assert parallel.shards == standard_build.summary.shards
    assert parallel.images == standard_build.summary.images


def test_a_different_seed_changes_the_draw_but_not_the_eval_split(tmp_path, standard_build):
    config = sample_preset(seed=7, stage2_size=8)
    other = build_mixture(standard_build.dirs, tmp_path / "m", config)
    assert other.counts["eval"] == standard_build.summary.counts["eval"]
    assert other.rows("stage2") == 8


def test_weights_and_caps_are_respected(tmp_path):
    overrides = {
        "stage3_caps": {"synthrad2023/*": 5},
        "stage3_weights": {"ixi/super_resolution": 0.5, "mimic_cxr/text_to_image": 2.0},
        "stage1_caps": {"ixi/reconstruction": 4},
        "stage2_size": 6,
    }
    built = build_standard(tmp_path, **overrides)
    stage3 = Counter((r["source"], r["task"]) for r in built.rows("stage3", ["source", "task"]))
    available = {
        (a["source"], a["task"]): a["train_samples"] for a in read_manifest(built.out)["available"]
    }
    assert stage3[("synthrad2023", "mri_to_ct")] == 5 == stage3[("synthrad2023", "ct_to_mri")]
    assert stage3[("ixi", "super_resolution")] == round(available[("ixi", "super_resolution")] / 2)
    assert stage3[("mimic_cxr", "text_to_image")] == 2 * available[("mimic_cxr", "text_to_image")]
    ids = [r["id"] for r in built.rows("stage3", ["id"])]
    assert any(i.endswith("-r1") for i in ids) and len(ids) == len(set(ids))
    assert built.summary.rows("stage2") == 6
    stage1 = Counter((r["source"], r["task"]) for r in built.rows("stage1", ["source", "task"]))
    assert stage1[("ixi", "reconstruction")] == 4
    passed, details = check_ratios(built.out, built.config)
    assert passed, details


def test_ratio_check_detects_a_config_mismatch(standard_build):
    assert check_ratios(standard_build.out, standard_build.config)[0]
    halved = sample_preset(stage3_weights={"synthrad2023/*": 0.5})
    passed, details = check_ratios(standard_build.out, halved)
    assert not passed
    assert {f["group"] for f in details["failures"]} == {
        "synthrad2023/ct_to_mri",
        "synthrad2023/mri_to_ct",
    }


def test_tasks_present_check(standard_build, tmp_path):
    config = sample_preset(tasks=["vqa_choice", "report", "reconstruction", "mri_to_ct"])
    built = build_standard(tmp_path, tasks=config.tasks)
    assert check_tasks_present(built.out, config)[0]
    passed, details = check_tasks_present(standard_build.out, standard_build.config)
    # The only open training questions are about test images: decontamination took them.
    assert not passed and details["missing"] == {"stage3": ["vqa_open"]}
    assert details["why"]["vqa_open"]["train_candidates"] == 2
    assert details["why"]["vqa_open"]["removed"] == {"eval_exact": 1, "eval_near_duplicate": 1}
    asks_caption = sample_preset(tasks=["caption", "reconstruction"])
    assert check_tasks_present(standard_build.out, asks_caption)[1]["why"]["caption"] == {
        "train_candidates": 0,
        "removed": {},
    }


def test_images_present_check_catches_a_planted_sample_without_image(standard_build, tmp_path):
    assert check_images_present(standard_build.out) == (
        True,
        {
            "checked": sum(standard_build.summary.rows(s) for s in SUBSETS),
            "missing": {},
            "examples": [],
        },
    )
    out = tmp_path / "mixture"
    shutil.copytree(standard_build.out, out)
    broken = next(r for r in standard_build.rows("stage3") if r["task"] == "super_resolution")
    broken.update(id="broken", target_image=None)
    plant_shard(out, "stage3", "broken", [broken])
    passed, details = check_images_present(out)
    assert not passed and details["missing"] == {"super_resolution:target_image": 1}


def test_card_lists_counts_licenses_and_method(standard_build):
    card = (standard_build.out / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: stage3" in card
    for text in (
        "## By source",
        "## By modality",
        "## By split",
        "## Licenses",
        "BICUBIC",
        "eval_exact",
        "synthrad2023",
        TARGET_IMAGE_TOKEN,
    ):
        assert text in card, text
    assert (standard_build.out / "composition.png").read_bytes().startswith(b"\x89PNG")


def test_export_llava_json_and_images(standard_build, tmp_path):
    counts = export_llava(standard_build.out, tmp_path / "llava")
    assert counts["stage3_train.json"] == standard_build.summary.rows("stage3")
    entries = json.loads((tmp_path / "llava" / "stage3_train.json").read_text())
    for entry in entries:
        assert entry["conversations"][0]["from"] == "human"
        for key in ("image", "target_image"):
            if key in entry:
                assert (tmp_path / "llava" / entry[key]).is_file()
        if entry["task_family"] == "generation":
            assert "target_image" in entry
        if entry["task"] != "text_to_image":
            assert "image" in entry and "<image>" in entry["conversations"][0]["value"]


def test_progress_is_reported_and_paper_preset_is_valid(tmp_path):
    dirs = standard_sources(tmp_path / "in")
    phases = []
    build_mixture(dirs, tmp_path / "m", sample_preset(), progress=lambda p, d, t: phases.append(p))
    assert phases and phases[-1] == "write"
    paper = paper_preset()
    assert paper.stage2_size == 47_000 and paper.closed_question_style == "choice"
    assert "llava_558k" in paper.task_sources["reconstruction"]


@pytest.mark.parametrize("freetype", [True, False])
def test_composition_chart_draws_with_or_without_freetype(standard_build, monkeypatch, freetype):
    from PIL import Image, features

    from healthgpt.data.mixture.card import composition_chart_png

    monkeypatch.setattr(features, "check", lambda name: freetype)
    chart = Image.open(io.BytesIO(composition_chart_png(standard_build.summary)))
    colours = {colour for _, colour in chart.convert("RGB").getcolors(1 << 20)}
    assert chart.size[0] == 800 and len(colours) > 4
