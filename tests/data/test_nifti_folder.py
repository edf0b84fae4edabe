"""NIfTI folder reader on a BIDS-like tree with sidecars, a 4D run, planted PHI, a bad file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from healthgpt.data.decode.deid import PUBLIC_SAMPLE_SALT, pseudonym
from healthgpt.data.samples import build_sample_source
from healthgpt.data.samples.brain import save_nifti
from healthgpt.data.samples.nifti_folder import MNI_PATH, PLANTED_PHI
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.nifti_folder import NiftiFolderReader
from tests.data.outputs import (
    assert_no_phi,
    meta,
    quarantine,
    records,
    run,
)

SALT = PUBLIC_SAMPLE_SALT  # a bundled sample keeps the public salt


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample_source("nifti_folder", tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "nifti_folder"
    return run("nifti_folder", sample, out), out


def by_file(out: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in records(out):
        groups.setdefault(record["orig_id"], []).append(record)
    return groups


def test_sample_counts_reconcile(ingested):
    summary, out = ingested
    assert (summary.items, summary.accepted_items, summary.quarantined) == (4, 3, 1)
    [row] = quarantine(out)
    assert row["item"] == pseudonym("sub-03/anat/sub-03_T1w.nii.gz", SALT, "file")
    assert row["reason"].startswith("truncated NIfTI")


def test_sidecar_bids_subject_and_4d(ingested):
    _, out = ingested
    groups = by_file(out)
    anat = groups[pseudonym("sub-01/anat/sub-01_T1w.nii.gz", SALT, "file")]
    assert {(r["modality"], r["body_part"]) for r in anat} == {("MRI", "head")}
    assert {r["subject_id"] for r in anat} == {pseudonym("sub-01", SALT, "subj")}
    assert all(meta(r)["sidecar"] for r in anat)
    bold = groups[pseudonym("sub-02/func/sub-02_task-rest_bold.nii.gz", SALT, "file")]
    assert {meta(r)["n_slices"] for r in bold} == {24}  # volume 0 of the 128x96x24x2 run
    mni = groups[pseudonym(MNI_PATH, SALT, "file")]
    assert {r["body_part"] for r in mni} == {None} and not meta(mni[0])["sidecar"]


def test_no_planted_phi_in_any_output(ingested):
    _, out = ingested
    assert_no_phi(out, PLANTED_PHI)


def test_modality_option_and_sidecar_precedence(tmp_path):
    data = np.zeros((12, 12, 4))
    data[3:9, 3:9, :] = 40.0
    save_nifti(data, np.eye(4), tmp_path / "scans" / "a.nii.gz")
    save_nifti(data, np.eye(4), tmp_path / "scans" / "b.nii")
    (tmp_path / "scans" / "b.json").write_text(json.dumps({"Modality": "MR"}))
    summary = run(
        "nifti_folder",
        tmp_path,
        tmp_path.with_name(tmp_path.name + "-out"),
        extra={"modality": "CT"},
    )
    assert summary.by_modality == Counter({"CT": 4, "MRI": 4})


def test_resampling_option(sample, tmp_path):
    run("nifti_folder", sample, tmp_path / "out", extra={"spacing": 4.0})
    anat = by_file(tmp_path / "out")[pseudonym("sub-01/anat/sub-01_T1w.nii.gz", SALT, "file")]
    assert {meta(r)["n_slices"] for r in anat} == {12}  # 25 slices of 2 mm -> 12 of 4 mm
    assert {tuple(meta(r)["spacing_mm"]) for r in anat} == {(4.0, 4.0, 4.0)}


def test_missing_or_empty_root_names_the_layout(tmp_path):
    with pytest.raises(LayoutError, match="does not exist") as info:
        NiftiFolderReader(tmp_path / "nowhere").validate_layout()
    assert "<name>.nii.gz" in str(info.value)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(LayoutError, match="no .nii or .nii.gz file"):
        NiftiFolderReader(tmp_path).validate_layout()
