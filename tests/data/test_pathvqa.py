"""PathVQA reader: the authors' pickle layout, the Parquet copy, and the pickle guard."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import pathvqa
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.pathvqa import (
    PathVqaReader,
    UnsafePickleError,
    load_restricted_pickle,
)
from tests.data.outputs import quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "pathvqa.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pathvqa")
    pathvqa.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("pathvqa_out")
    return run("pathvqa", sample, out), out


class Exploit:
    """Unpickling this runs a shell command, if the unpickler lets it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def qa_pairs(rows: list[dict]) -> Counter:
    return Counter((r["split"], r["question"], r["answer"]) for r in rows)


def test_pickle_layout_counts_match_the_manifest(ingested):
    summary, out = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    rows = records(out)
    assert {r["modality"] for r in rows} == {"Pathology"}
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    for r in rows:
        assert r["answer_type"] == ("closed" if r["answer"] in ("yes", "no") else "open")
    assert {r["orig_path"] for r in rows if r["split"] == "validation"} == {
        "pvqa/images/val/val_0000.jpg"
    }


def test_bad_pickle_rows_are_quarantined(ingested):
    _, out = ingested
    reasons = sorted(q["reason"].split(":")[0] for q in quarantine(out))
    assert reasons == [
        "image file is empty (0 bytes)",
        "image file missing",
        "undecodable image train_9992.jpg",
    ]


def test_parquet_layout_gives_the_same_records(ingested, tmp_path):
    _, pkl_out = ingested
    root = tmp_path / "hf"
    pathvqa.build_parquet(root)
    assert PathVqaReader(root).layout == "parquet"
    summary = run("pathvqa", root, tmp_path / "out")
    assert (summary.records, summary.quarantined) == (72, 3)
    assert qa_pairs(records(tmp_path / "out")) == qa_pairs(records(pkl_out))
    reasons = sorted(q["reason"] for q in quarantine(tmp_path / "out"))
    assert reasons[0].startswith("row has no image bytes")
    assert reasons[1].startswith("row has no image bytes")  # empty bytes
    assert reasons[2].startswith("undecodable image")


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"image": "x", "q": Exploit(marker)}]))
    with pytest.raises(UnsafePickleError, match=r"refused to load (posix|nt)\.system"):
        load_restricted_pickle(path)
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_data(tmp_path):
    rows = [{"image": "train_0000", "question": "q?", "answer": "yes", "n": 1, "f": 0.5}]
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(rows, protocol=2))
    assert load_restricted_pickle(path) == rows


def test_malicious_split_is_quarantined_and_other_splits_still_ingest(sample, tmp_path):
    import shutil

    root = tmp_path / "src"
    shutil.copytree(sample, root)
    marker = tmp_path / "pwned"
    evil = root / "pvqa" / "qas" / "test" / "test_qa.pkl"
    evil.write_bytes(pickle.dumps([{"image": "test_0000", "question": Exploit(marker)}]))
    summary = run("pathvqa", root, tmp_path / "out")
    assert not marker.exists()
    assert "test" not in summary.by_split and summary.by_split["train"] > 0
    rejected = [q for q in quarantine(tmp_path / "out") if q["item"].endswith("test_qa.pkl")]
    assert len(rejected) == 1 and rejected[0]["reason"].startswith("unsafe pickle: refused")


def test_wrong_layout_names_both_expected_layouts(tmp_path):
    (tmp_path / "pvqa" / "images").mkdir(parents=True)
    with pytest.raises(LayoutError) as error:
        PathVqaReader(tmp_path).validate_layout()
    assert "_qa.pkl" in str(error.value) and ".parquet" in str(error.value)
