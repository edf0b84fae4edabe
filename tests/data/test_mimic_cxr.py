"""MIMIC-CXR-JPG reader: views, report sections, CheXpert labels and de-identification."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest
import yaml

from healthgpt.data.samples import mimic_cxr
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.mimic_cxr import (
    CHEXPERT,
    METADATA,
    MimicCxrReader,
    parse_report,
    report_text,
)
from tests.data.outputs import assert_no_phi, meta, quarantine, records, run

MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "mimic_cxr.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic")
    mimic_cxr.build(root)
    return root


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("mimic_out")
    return run("mimic_cxr", sample, out), out


def csv_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def planted_phi(root: Path) -> list[str]:
    """Every raw identifier and date the sample's metadata holds."""
    values = set()
    for row in csv_rows(root / METADATA):
        values |= {row["subject_id"], row["study_id"], row["dicom_id"], row["StudyDate"]}
        values |= {f"p{row['subject_id']}", f"s{row['study_id']}", row["StudyTime"]}
        values.add(row["dicom_id"].split("-")[0])
    return sorted(values)


def test_counts_views_and_splits(ingested):
    summary, out = ingested
    expected = yaml.safe_load(MANIFEST.read_text())["expected_counts"]["sample"]
    assert (summary.items, summary.quarantined) == (expected["items"], expected["quarantined"])
    assert expected["records_min"] <= summary.records <= expected["records_max"]
    assert summary.skipped == {"view LL (frontal_only)": 1, "view missing (frontal_only)": 1}
    rows = records(out)
    assert {meta(r)["view"] for r in rows} == {"PA"}
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert {(r["kind"], r["modality"], r["body_part"]) for r in rows} == {
        ("report", "X-Ray", "chest")
    }


def test_frontal_only_off_keeps_lateral_and_unknown_views(sample, tmp_path):
    summary = run("mimic_cxr", sample, tmp_path / "out", frontal_only=False)
    assert not summary.skipped
    views = sorted(meta(r).get("view", "") for r in records(tmp_path / "out"))
    assert views.count("LL") == 1 and views.count("") == 1


def test_report_text_is_findings_and_impression_only(ingested):
    _, out = ingested
    texts = {r["text"] for r in records(out)}
    assert texts == {
        "FINDINGS: Single frontal (posteroanterior) view of the chest, acquired with computed "
        "radiography.\nIMPRESSION: Frontal chest radiograph."
    }


def test_no_raw_identifier_or_date_reaches_any_output(sample, ingested):
    _, out = ingested
    planted = planted_phi(sample)
    assert "10000032" in planted and len(planted) > 40
    assert_no_phi(out, planted + ["MRN", "Dr.", "10:15"])


def test_quarantine_uses_pseudonyms_and_reasons(ingested):
    _, out = ingested
    rows = quarantine(out)
    reasons = sorted(q["reason"] for q in rows)
    assert reasons[0] == "image file is empty (0 bytes)"
    assert reasons[1] == "image file missing"
    assert reasons[2] == "report file missing for the study"
    assert "truncated" in reasons[3] and "img-" in reasons[3]
    for q in rows:
        assert q["item"].startswith("img-")
        assert q["rel_path"].startswith("files/subj-")


def test_pseudonyms_depend_on_the_salt(sample, ingested, tmp_path):
    _, out = ingested
    run("mimic_cxr", sample, tmp_path / "salted", deid_salt="another-salt")
    first, second = records(out), records(tmp_path / "salted")
    assert [r["subject_id"] for r in first] != [r["subject_id"] for r in second]
    assert not {r["orig_path"] for r in first} & {r["orig_path"] for r in second}
    subjects = {r["subject_id"] for r in first}
    assert len(subjects) == 6 and all(s.startswith("subj-") for s in subjects)


def test_reports_under_a_separate_root_and_chexpert_labels(sample, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(sample, root)
    for report in sorted((root / "files").rglob("*.txt")):
        target = root / "mimic-reports" / report.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        report.rename(target)
    labels = csv_rows(root / CHEXPERT)
    labels[0].update({"Cardiomegaly": "1.0", "Edema": "-1.0", "No Finding": "0.0"})
    with gzip.open(root / CHEXPERT, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(labels[0]))
        writer.writeheader()
        writer.writerows(labels)
    with pytest.raises(LayoutError, match="reports_root"):
        MimicCxrReader(root, _options(reports_root="nowhere")).validate_layout()
    summary = run("mimic_cxr", root, tmp_path / "out", extra={"reports_root": "mimic-reports"})
    assert summary.records == 8
    chexpert = [meta(r)["chexpert"] for r in records(tmp_path / "out")]
    assert {"Cardiomegaly": 1, "Edema": -1, "No Finding": 0} in chexpert
    assert chexpert.count({}) == len(chexpert) - 1


def _options(**extra):
    from healthgpt.data.sources import ReaderOptions

    return ReaderOptions(extra=extra)


def test_parse_report_sections():
    text = """
                                 FINAL REPORT
 INDICATION:  ___ with dyspnea. MRN 12345678.
 FINDINGS:
 The lungs are clear.  No pleural
 effusion.   Accession 987654321 noted.
 IMPRESSION:
 No acute process.
 NOTIFICATION:  Dr. ___ paged at 10:15.
"""
    sections = parse_report(text)
    assert sections == {
        "findings": "The lungs are clear. No pleural effusion. Accession 987654321 noted.",
        "impression": "No acute process.",
    }
    assert report_text(sections) == (
        "FINDINGS: The lungs are clear. No pleural effusion. Accession ___ noted.\n"
        "IMPRESSION: No acute process."
    )
    assert parse_report("IMPRESSION: Stable.") == {"impression": "Stable."}
    assert parse_report("FINAL REPORT\nThe chest is normal.") == {}


def test_report_without_sections_is_quarantined(sample, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(sample, root)
    for report in (root / "files").rglob("*.txt"):
        report.write_text("FINAL REPORT\n The chest is unremarkable.\n")
    summary = run("mimic_cxr", root, tmp_path / "out")
    assert summary.records == 0
    reasons = {q["reason"] for q in quarantine(tmp_path / "out")}
    assert "report has no FINDINGS or IMPRESSION section" in reasons


def test_wrong_layout_names_the_expected_one(tmp_path):
    (tmp_path / "files").mkdir()
    with pytest.raises(LayoutError, match="metadata.csv.gz") as error:
        MimicCxrReader(tmp_path).validate_layout()
    assert "files/p<XX>/p<subject_id>" in str(error.value)
