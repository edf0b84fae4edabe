"""A hospital-export-like DICOM tree made of real DICOM files from pydicom and pydicom-data.

Every file is a real image from the packages' test data; its header is overwritten with
planted, fictitious PHI (`PLANTED_PHI`), and the folder names carry it too, the way PACS
exports name folders. The reader must keep all of it out of the shards, which the tests check
by scanning every string column for these values. Bad inputs sit beside the good ones: a
truncated DICOM, a non-image DICOM (RT plan), a structured report, and a non-DICOM file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from healthgpt.data.samples.seal import sealed

PATIENTS = {
    "jane": {
        "PatientName": "DOE^JANE",
        "PatientID": "MRN12345678",
        "PatientBirthDate": "19700101",
        "AccessionNumber": "ACC20240001",
    },
    "richard": {
        "PatientName": "ROE^RICHARD",
        "PatientID": "MRN87654321",
        "PatientBirthDate": "19651231",
        "AccessionNumber": "ACC20240002",
    },
}
SHARED_PHI = {
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "SMITH^JOHN",
    "StudyDate": "20240102",
}
PLANTED_PHI = sorted(
    {
        *(v for p in PATIENTS.values() for v in p.values()),
        *SHARED_PHI.values(),
        "DOE_JANE",
        "ROE_RICHARD",
        "RICHARD",
        "St Example",
    }
)
"""Strings that must never appear in any output of this sample."""

# (patient, relative path, test file, what it shows); paths imitate a PACS export
FILES = (
    ("jane", "DOE_JANE_MRN12345678/CT_HEAD_ACC20240001/IM0001", "CT_small.dcm", "CT, HU"),
    ("jane", "DOE_JANE_MRN12345678/CT_HEAD_ACC20240001/IM0002", "693_J2KR.dcm", "CT, J2K"),
    ("jane", "DOE_JANE_MRN12345678/MR_BRAIN_ACC20240001/IM0001", "MR_small.dcm", "MR"),
    ("jane", "DOE_JANE_MRN12345678/MR_BRAIN_ACC20240001/IM0002", "emri_small.dcm", "10 frames"),
    ("jane", "DOE_JANE_MRN12345678/MR_BRAIN_ACC20240001/IM0003.dcm", "MR_small_RLE.dcm", "RLE"),
    ("richard", "ROE_RICHARD_MRN87654321/MR/IM0001", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LS"),
    ("richard", "ROE_RICHARD_MRN87654321/NM/IM0001", "JPGExtended.dcm", "JPEG extended"),
    ("richard", "ROE_RICHARD_MRN87654321/SC/IM0001", "SC_rgb_jpeg_dcmtk.dcm", "YBR JPEG"),
)
CHEST = ("richard", "ROE_RICHARD_MRN87654321/CR_CHEST/IM0001", "RG1_UNCI.dcm")
TRUNCATED = ("jane", "DOE_JANE_MRN12345678/CT_HEAD_ACC20240001/IM0003", "CT_small.dcm")
NON_IMAGE = (
    ("jane", "DOE_JANE_MRN12345678/RTPLAN/IM0001", "rtplan.dcm"),
    ("richard", "ROE_RICHARD_MRN87654321/SR/IM0001", "test-SR.dcm"),
)
NOT_DICOM = "DOE_JANE_MRN12345678/notes_DOE_JANE.txt"

README = """\
DICOM folder sample source (built by healthgpt.data.samples.dicom_folder)

REAL:      every DICOM file is a real image from pydicom's / pydicom-data's test files
           (CT_small, 693_J2KR, MR_small, emri_small (10 frames), MR_small_RLE,
           MR_small_jpeg_ls_lossless, JPGExtended, SC_rgb_jpeg_dcmtk; RG1_UNCI, a CR chest,
           downsampled 4x and RLE-compressed to keep the sample small).
PLANTED:   fictitious PHI in every header (PatientName DOE^JANE / ROE^RICHARD, PatientID
           MRN12345678 / MRN87654321, birth dates, AccessionNumber, InstitutionName
           "St Example Hospital", referring physician) and in the folder names. None of it may
           reach the ingested shards or the quarantine table.
DECLARED:  BurnedInAnnotation NO where a test file says nothing (their pixels show no
           text); the secondary capture class is quarantined all the same.
BAD INPUT: .../CT_HEAD_ACC20240001/IM0003  truncated DICOM (first 60% of CT_small)
           .../RTPLAN/IM0001              RT plan, no pixel data
           .../SR/IM0001                  structured report, no pixel data
           .../notes_DOE_JANE.txt         not DICOM
           DICOMDIR                        index file, ignored by the reader
"""


@sealed
def build(dest: Path) -> None:
    """Write the sample under `dest` (deterministic bytes)."""
    for patient, rel, name, _ in FILES:
        _write(_with_phi(pydicom.dcmread(get_testdata_file(name)), patient), dest / rel)
    patient, rel, name = CHEST
    _write(
        _with_phi(_downsampled_rle(pydicom.dcmread(get_testdata_file(name)), 4), patient),
        dest / rel,
    )
    patient, rel, name = TRUNCATED
    full = dest / rel
    _write(_with_phi(pydicom.dcmread(get_testdata_file(name)), patient), full)
    data = full.read_bytes()
    full.write_bytes(data[: int(len(data) * 0.6)])
    for patient, rel, name in NON_IMAGE:
        _write(_with_phi(pydicom.dcmread(get_testdata_file(name)), patient), dest / rel)
    notes = dest / NOT_DICOM
    notes.write_text("Patient DOE^JANE, MRN12345678, born 19700101: follow-up in 6 weeks.\n")
    (dest / "DICOMDIR").write_bytes(b"")  # stands in for the media index; the reader ignores it
    (dest / "SAMPLE_README.txt").write_text(README)


def _with_phi(ds: Dataset, patient: str) -> Dataset:
    """The patient's planted identifiers, and BurnedInAnnotation NO where the file says
    nothing (pydicom's test images show no text; deid's class rules still apply)."""
    for keyword, value in {**PATIENTS[patient], **SHARED_PHI}.items():
        setattr(ds, keyword, value)
    if "BurnedInAnnotation" not in ds:
        ds.BurnedInAnnotation = "NO"
    return ds


def _downsampled_rle(ds: Dataset, factor: int) -> Dataset:
    """Keep every `factor`-th pixel and store the result RLE-compressed (pydicom's encoder)."""
    pixels = np.ascontiguousarray(ds.pixel_array[::factor, ::factor])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(
        pixels, ds.PhotometricInterpretation, int(ds.BitsStored), generate_instance_uid=False
    )
    spacing = ds.get("PixelSpacing")
    if spacing:
        ds.PixelSpacing = [float(s) * factor for s in spacing]
    ds.compress(RLELossless, generate_instance_uid=False)
    return ds


def _write(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
