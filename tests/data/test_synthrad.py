"""SynthRAD2023 Task 1 reader on the official layout built by the sample builder."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from healthgpt.data.decode.imaging import decode_png
from healthgpt.data.samples import build_sample_source
from healthgpt.data.samples.brain import save_nifti
from healthgpt.data.sources import LayoutError
from healthgpt.data.sources.synthrad import SynthRadReader
from tests.data.outputs import meta, quarantine, records, run


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample_source("synthrad2023", tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def ingested(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "synthrad"
    return run("synthrad2023", sample, out), out


def test_sample_counts_reconcile(ingested):
    summary, out = ingested
    assert (summary.items, summary.accepted_items, summary.quarantined) == (4, 3, 1)
    assert summary.by_kind == Counter({"pair": summary.records})
    [row] = quarantine(out)
    assert row["item"] == "case 1BC003" and row["rel_path"] == "Task1/brain/1BC003"
    assert row["reason"].startswith("geometry mismatch: ct shape")


def test_pairs_are_mr_to_ct(ingested):
    _, out = ingested
    rows = records(out)
    assert {(r["modality"], r["target_modality"], r["task"]) for r in rows} == {
        ("MRI", "CT", "mri_to_ct")
    }
    assert Counter(r["body_part"] for r in rows).keys() == {"head", "pelvis"}
    assert {r["orig_id"] for r in rows} == {"1BA001", "1BB002", "1PA001"}
    for record in rows:
        assert record["image"]["bytes"] and record["target_image"]["bytes"]
        assert record["subject_id"].startswith("subj-") and "1B" not in record["subject_id"]
        assert meta(record)["ct_window_hu"] == [-1000.0, 1000.0]


def test_mask_blanks_background_in_both_images(ingested):
    _, out = ingested
    for record in records(out)[::7]:
        mr = decode_png(record["image"]["bytes"])
        ct = decode_png(record["target_image"]["bytes"])
        assert mr[0, 0] == 0 and ct[0, 0] == 0  # corners lie outside every body mask
        body = ct > 0
        assert body.any() and mr[~body].max() <= 10  # MR is blank wherever CT shows air


def test_mask_chooses_the_slices(tmp_path):
    case = tmp_path / "Task1" / "pelvis" / "1PA042"
    mr = np.full((16, 16, 8), 300.0)
    mask = np.zeros_like(mr, dtype=np.uint8)
    mask[2:14, 2:14, 2:6] = 1  # 56 % of slices 2-5, nothing elsewhere
    for name, data in (("mr", mr), ("ct", np.zeros_like(mr)), ("mask", mask)):
        save_nifti(data, np.eye(4), case / f"{name}.nii.gz")
    summary = run("synthrad2023", tmp_path, tmp_path.with_name(tmp_path.name + "-out"))
    assert summary.records == 4
    assert sorted(
        meta(r)["slice_index"] for r in records(tmp_path.with_name(tmp_path.name + "-out"))
    ) == [2, 3, 4, 5]
    summary = run(
        "synthrad2023",
        tmp_path,
        tmp_path.with_name(tmp_path.name + "-out2"),
        min_foreground_fraction=0.6,
    )
    assert summary.records == 0 and summary.quarantined == 1
    assert quarantine(tmp_path.with_name(tmp_path.name + "-out2"))[0]["reason"].startswith(
        "no slice reaches"
    )


def test_incomplete_case_is_quarantined(sample, tmp_path):
    root = tmp_path / "synthrad"
    shutil.copytree(sample, root)
    (root / "Task1/brain/1BB002/ct.nii.gz").unlink()
    (root / "Task1/brain/overview").mkdir()  # not a case: ignored
    run("synthrad2023", root, tmp_path / "out")
    reasons = {row["item"]: row["reason"] for row in quarantine(tmp_path / "out")}
    assert reasons["case 1BB002"] == "incomplete case: missing ct.nii.gz"
    assert len(reasons) == 2


def test_task_folder_as_root(sample, ingested, tmp_path):
    summary = run("synthrad2023", sample / "Task1", tmp_path / "out")
    assert summary.records == ingested[0].records


def test_missing_root_names_the_layout(tmp_path):
    with pytest.raises(LayoutError, match="does not exist") as info:
        SynthRadReader(tmp_path / "nowhere").validate_layout()
    assert "Task1/brain/1BA001/mr.nii.gz" in str(info.value)
    with pytest.raises(LayoutError, match="no Task1/brain or Task1/pelvis"):
        SynthRadReader(tmp_path).validate_layout()
