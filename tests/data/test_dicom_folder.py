"""DICOM folder reader on a hospital-export-like tree with planted PHI and bad inputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from healthgpt.data.decode.deid import PUBLIC_SAMPLE_SALT, pseudonym
from healthgpt.data.samples import build_sample_source
from healthgpt.data.samples.dicom_folder import PLANTED_PHI
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.dicom_folder import DicomFolderReader
from tests.data.outputs import (
    assert_no_phi,
    meta,
    quarantine,
    records,
    run,
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample_source("dicom_folder", tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "dicom_folder"
    return run("dicom_folder", sample, out), out


def token(rel: str) -> str:
    return pseudonym(rel, PUBLIC_SAMPLE_SALT, prefix="file")


def test_every_file_is_accounted_for(sample, ingested):
    summary, _ = ingested
    files = [p for p in sample.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert summary.items == len(files) == 14
    assert (summary.accepted_items, summary.quarantined, summary.records) == (7, 7, 16)


def test_secondary_captures_are_quarantined_by_rule_unless_reviewed(sample, ingested, tmp_path):
    """The NM whole-body and the OT colour image are secondary captures: the sample does not
    opt in, so the demo shows the rule at work the way a hospital export would meet it."""
    _, out = ingested
    reasons = {row["item"]: row["reason"] for row in quarantine(out)}
    for rel in ("ROE_RICHARD_MRN87654321/NM/IM0001", "ROE_RICHARD_MRN87654321/SC/IM0001"):
        assert reasons[token(rel)].startswith("burned-in text rule 'secondary capture SOP class'")
    summary = run("dicom_folder", sample, tmp_path / "out", burned_in_reviewed=True)
    assert (summary.accepted_items, summary.quarantined, summary.records) == (9, 5, 18)
    modalities = Counter(r["modality"] for r in records(tmp_path / "out"))
    assert modalities["Nuclear Medicine"] == modalities["Other"] == 1


def test_bad_inputs_are_quarantined_with_reasons(ingested):
    _, out = ingested
    reasons = {row["item"]: row["reason"] for row in quarantine(out)}
    root = "DOE_JANE_MRN12345678"
    assert reasons[token(f"{root}/CT_HEAD_ACC20240001/IM0003")].startswith("truncated DICOM")
    assert reasons[token(f"{root}/RTPLAN/IM0001")] == "non-image DICOM (SOP class RT Plan Storage)"
    assert (
        reasons[token("ROE_RICHARD_MRN87654321/SR/IM0001")]
        == "non-image DICOM (SOP class Comprehensive SR Storage)"
    )
    assert reasons[token(f"{root}/notes_DOE_JANE.txt")].startswith("not a DICOM file")
    assert reasons[token("SAMPLE_README.txt")].startswith("not a DICOM file")


def test_no_planted_phi_in_any_output(ingested):
    _, out = ingested
    assert_no_phi(out, PLANTED_PHI)
    for record in records(out):
        assert record["orig_path"].startswith("file-") and "/" not in record["orig_path"]


def test_phi_scan_would_catch_a_leak(ingested, tmp_path):
    """The scan itself must be able to fail: a path copied verbatim would be caught."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, out = ingested
    leaky = tmp_path / "leaky"
    (leaky / "data").mkdir(parents=True)
    table = pq.read_table(next((out / "data").glob("*.parquet")))
    paths = ["DOE_JANE_MRN12345678/CT/IM0001"] * table.num_rows
    table = table.set_column(table.column_names.index("orig_path"), "orig_path", pa.array(paths))
    pq.write_table(table, leaky / "data" / "train-00000.parquet")
    (leaky / "_manifest.json").write_text("{}")
    with pytest.raises(AssertionError, match="leaked into outputs"):
        assert_no_phi(leaky, PLANTED_PHI)


def test_header_fields_and_frames(ingested):
    _, out = ingested
    rows = records(out)
    assert Counter(r["modality"] for r in rows) == Counter({"MRI": 13, "CT": 2, "X-Ray": 1})
    multi = [r for r in rows if meta(r)["n_frames"] == 10]
    assert sorted(meta(r)["frame_index"] for r in multi) == list(range(10))
    assert len({r["orig_id"] for r in multi}) == 1 and len({r["id"] for r in multi}) == 10
    chest = [r for r in rows if r["modality"] == "X-Ray"]
    assert chest[0]["body_part"] == "chest" and meta(chest[0])["view_position"] == "PA"


def test_subjects_are_pseudonymous_per_patient(ingested, sample, tmp_path):
    _, out = ingested
    subjects = {r["subject_id"] for r in records(out)}
    assert len(subjects) == 2 and all(s.startswith("subj-") for s in subjects)
    run("dicom_folder", sample, tmp_path / "salted", deid_salt="another-salt")
    assert not subjects & {r["subject_id"] for r in records(tmp_path / "salted")}


def test_frame_stride(sample, tmp_path):
    summary = run("dicom_folder", sample, tmp_path / "out", slice_stride=5)
    assert summary.records == 16 - 10 + 2


def test_missing_or_empty_root_names_the_layout(tmp_path):
    with pytest.raises(LayoutError, match="does not exist") as info:
        DicomFolderReader(tmp_path / "nowhere").validate_layout()
    assert "DICOMDIR" in str(info.value)
    (tmp_path / "DICOMDIR").write_bytes(b"")
    with pytest.raises(LayoutError, match="contains no files"):
        DicomFolderReader(tmp_path).validate_layout()
