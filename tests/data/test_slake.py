"""SLAKE reader: languages, splits, body parts, bad inputs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import slake
from healthgpt.data.shards import read_manifest
from healthgpt.data.sources import LayoutError, ReaderOptions
from healthgpt.data.sources.slake import SlakeReader
from tests.data.outputs import meta, quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "slake.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slake")
    slake.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("slake_out")
    return run("slake", sample, out), out


def language_counts(root: Path) -> Counter:
    counts: Counter = Counter()
    for name in ("train.json", "validation.json", "test.json"):
        counts.update(row["q_lang"] for row in json.loads((root / name).read_text()))
    return counts


def test_english_by_default_other_language_counted_as_skipped(sample, ingested):
    summary, out = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    langs = language_counts(sample)
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert summary.items == langs["en"]
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    assert {meta(r)["q_lang"] for r in records(out)} == {"en"}
    skipped = {"q_lang zh (language=en)": langs["zh"]}
    assert summary.to_json()["skipped_by_config"] == skipped
    assert read_manifest(out)["summary"]["skipped_by_config"] == skipped


@pytest.mark.parametrize("language", ["zh", "all"])
def test_language_option_selects_rows(sample, tmp_path, language):
    summary = run("slake", sample, tmp_path / "out", language=language)
    langs = language_counts(sample)
    rows = records(tmp_path / "out")
    if language == "zh":
        assert summary.records == langs["zh"]
        assert {meta(r)["q_lang"] for r in rows} == {"zh"}
        assert {r["answer"] for r in rows} >= {"CT", "否", "头部"}
        assert summary.skipped == {"q_lang en (language=zh)": langs["en"]}
    else:
        assert summary.records + summary.quarantined == langs["en"] + langs["zh"]
        assert not summary.skipped


def test_unknown_language_is_refused(sample):
    with pytest.raises(ValueError, match="language must be one of"):
        SlakeReader(sample, ReaderOptions(language="fr"))


def test_splits_modalities_and_body_parts(ingested):
    _, out = ingested
    rows = records(out)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert {r["modality"] for r in rows} == {"CT", "MRI", "X-Ray"}
    parts = {(meta(r)["location"], r["body_part"]) for r in rows}
    assert parts == {("Brain", "head"), ("Lung", "chest"), ("Abdomen", "abdomen"), ("Neck", "neck")}
    assert {r["answer_type"] for r in rows} == {"open", "closed"}


def test_bad_inputs_are_quarantined(ingested):
    _, out = ingested
    reasons = {q["rel_path"]: q["reason"] for q in quarantine(out)}
    assert set(reasons) == {f"imgs/xmlab{n}/source.jpg" for n in (90, 91, 92)}
    assert reasons["imgs/xmlab90/source.jpg"].startswith("image file missing")
    assert reasons["imgs/xmlab91/source.jpg"].startswith("image file is empty")
    assert "truncated" in reasons["imgs/xmlab92/source.jpg"]


def test_official_validate_json_name_is_accepted(sample, tmp_path):
    root = tmp_path / "Slake1.0"
    shutil.copytree(sample, root)
    (root / "validation.json").rename(root / "validate.json")
    summary = run("slake", root, tmp_path / "out")
    assert summary.by_split["validation"] > 0


def test_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(LayoutError, match="train.json"):
        SlakeReader(tmp_path).validate_layout()
