"""IXI reader on the official layout (tars and extracted files) built by the sample builder."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from healthgpt.data.decode.imaging import decode_png
from healthgpt.data.samples import build_sample_source
from healthgpt.data.samples.brain import nifti_bytes, write_tar
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.ixi import IxiReader
from tests.data.outputs import meta, quarantine, records, run


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample_source("ixi", tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ixi"
    return run("ixi", sample, out), out


def test_sample_counts_reconcile(ingested):
    summary, out = ingested
    assert (summary.items, summary.accepted_items, summary.quarantined) == (10, 9, 1)
    assert summary.skipped == Counter({"sequence MRA not selected": 1})
    assert summary.by_kind == Counter({"image": summary.records})
    assert summary.by_modality == Counter({"MRI": summary.records})
    assert summary.by_split == Counter({"train": summary.records})
    [row] = quarantine(out)
    assert row["rel_path"] == "IXI-T1/IXI099-Guys-0999-T1.nii.gz"
    assert row["reason"].startswith("truncated NIfTI")


def test_every_sequence_of_every_subject_from_tars_and_folders(ingested):
    _, out = ingested
    volumes = {(r["orig_id"], r["orig_path"]) for r in records(out)}
    assert len(volumes) == 9
    assert ("IXI002-Guys-0828-T2", "IXI-T2.tar:IXI002-Guys-0828-T2.nii.gz") in volumes
    assert ("IXI035-IOP-0873-PD", "IXI-PD/IXI035-IOP-0873-PD.nii.gz") in volumes
    assert {meta(r)["sequence"] for r in records(out)} == {"T1", "T2", "PD"}


def test_subject_ids_are_consistent_pseudonyms(ingested):
    _, out = ingested
    by_subject = defaultdict(set)
    for record in records(out):
        by_subject[record["orig_id"].rsplit("-", 1)[0]].add(record["subject_id"])
        assert "IXI" not in record["subject_id"]
        assert record["body_part"] == "head" and meta(record)["anatomy"] == "brain"
    assert all(len(ids) == 1 for ids in by_subject.values())
    assert len({next(iter(ids)) for ids in by_subject.values()}) == 3


def test_flipped_subject_reads_like_the_others(ingested):
    """IXI012 is stored LPS and scaled by 0.9: after reorientation and per-volume percentile
    normalization its slices match IXI002's (the template is left-right symmetric, so the
    anterior-posterior flip is the one that shows)."""
    _, out = ingested
    images = {
        (r["orig_id"], meta(r)["slice_index"]): decode_png(r["image"]["bytes"])
        for r in records(out)
    }
    for index in (8, 12, 16):
        a = images[("IXI002-Guys-0828-T1", index)].astype(int)
        b = images[("IXI012-HH-1211-T1", index)].astype(int)
        assert np.abs(a - b).mean() < 1.0
        assert np.abs(a - np.flipud(b)).mean() > 10.0


def test_t2_and_pd_share_grid_and_slices(ingested):
    _, out = ingested
    kept, grids = defaultdict(set), defaultdict(set)
    for record in records(out):
        kept[record["orig_id"]].add(meta(record)["slice_index"])
        grids[record["orig_id"]].add(meta(record)["grid_id"])
    assert kept["IXI002-Guys-0828-T2"] == kept["IXI002-Guys-0828-PD"]
    assert grids["IXI002-Guys-0828-T2"] == grids["IXI002-Guys-0828-PD"]
    assert all(len(g) == 1 for g in grids.values())


def test_duplicates_bad_names_and_broken_tars_are_quarantined(sample, tmp_path):
    root = tmp_path / "ixi"
    shutil.copytree(sample, root)
    volume = (root / "IXI-T1" / "IXI035-IOP-0873-T1.nii.gz").read_bytes()
    write_tar(root / "IXI-T2.tar", {"IXI035-IOP-0873-T1.nii.gz": volume})  # also extracted
    (root / "IXI-T1" / "brain_t1.nii.gz").write_bytes(volume)
    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w") as archive:
        info = tarfile.TarInfo("IXI777-Guys-0001-PD.nii.gz")
        info.size = len(volume)
        archive.addfile(info, io.BytesIO(volume))
    (root / "IXI-PD.tar").write_bytes(broken.getvalue()[:2000])
    summary = run("ixi", root, tmp_path / "out")
    reasons = {row["rel_path"]: row["reason"] for row in quarantine(tmp_path / "out")}
    assert reasons["IXI-T2.tar:IXI035-IOP-0873-T1.nii.gz"].startswith("duplicate of IXI-T1/")
    assert reasons["IXI-T1/brain_t1.nii.gz"].startswith("file name is not IXI")
    assert reasons["IXI-PD.tar"].startswith("truncated or corrupt tar archive")
    assert summary.quarantined == 4


def test_only_tars(tmp_path):
    data = np.zeros((8, 8, 4), np.float32)
    data[2:6, 2:6, :] = 100.0
    write_tar(tmp_path / "IXI-T1.tar", {"IXI001-Guys-0001-T1.nii.gz": nifti_bytes(data, np.eye(4))})
    summary = run("ixi", tmp_path, tmp_path.with_name(tmp_path.name + "-out"))
    assert (summary.items, summary.records) == (1, 4)


def test_missing_or_wrong_root_names_the_layout(tmp_path):
    with pytest.raises(LayoutError, match="does not exist") as info:
        IxiReader(tmp_path / "nowhere").validate_layout()
    assert "IXI-T1.tar" in str(info.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LayoutError, match="no IXI-\\*.tar archive"):
        IxiReader(tmp_path).validate_layout()
