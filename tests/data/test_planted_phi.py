"""Planted PHI, end to end: real-data layouts (no sample marker) carrying a name, an id and
a birth date in every place the red-team pass found a leak, ingested with default options
(and a fixed salt, so the scan is deterministic).

- burned into the pixels of an ultrasound DICOM whose header does not flag it;
- as free text in allow-listed DICOM fields (BodyPartExamined, ImageType, ViewPosition,
  SOPClassUID, PhotometricInterpretation) and in MIMIC's ViewPosition column;
- in MIMIC report text (names after titles, dates, phones, an address, an age over 89, a
  NOTIFICATION on the IMPRESSION line, lower-case headings);
- in the ICC profile, EXIF and PNG text chunks of the source images.

Every output is scanned: every string and binary value of every shard and of the quarantine
table (struct fields included), the ancillary chunks of every output PNG (decompressed), the
manifest, and the raw bytes of every output file. Zero occurrences are allowed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from healthgpt.data.samples import build_sample_source
from healthgpt.data.sources.mimic_cxr import METADATA
from tests.data.outputs import quarantine, records, run

NAME, PATIENT_ID, BIRTH_DATE = "DOE^JANE", "1234567", "19700101"
SECRETS = (
    NAME, "DOE JANE", "JANE", "SMITH", "JOHN", PATIENT_ID, BIRTH_DATE, "1932", "03/14/2019",
    "617-555", "555-0199", "Main Street", "10:15", "NOTIFICATION", "93 year", "Brown",
    # names without titles, particles, dates in words, a street number with a letter, an
    # international number (the scrubber once kept all of these)
    "Horatio", "Pennyworth", "Rosalind", "Quimby", "Ottilie", "Vandersloot", "Bartholomew",
    "Krugmann", "Berglund", "third of May", "3-May-19", "221B", "Baker Street", "7946",
)  # fmt: skip
"""Nothing in any output may contain these (case-insensitive)."""

SALT = "planted-phi-fixed-salt-0001"
"""A fixed salt, so the scan is deterministic: a random one made random hex pseudonyms, and
one in a few thousand held a 4-digit secret such as '1932' by chance."""

ICC_WITH_NAME = b"\x00\x00\x02\x0c" + f"{NAME} {PATIENT_ID} {BIRTH_DATE}".encode() + bytes(64)


# ------------------------------------------------------------------------------ the inputs


def ultrasound(path: Path, text: str = f"{NAME} {PATIENT_ID} {BIRTH_DATE}") -> Path:
    """An uncompressed ultrasound DICOM with `text` drawn into its pixels, and nothing in
    its header that says so (no BurnedInAnnotation)."""
    canvas = Image.new("L", (256, 128), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), text, fill=255)
    draw.ellipse((80, 40, 176, 120), fill=90)  # the anatomy
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[text])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = text.split()
    ds.set_pixel_data(np.asarray(canvas), "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ct(path: Path, **attributes: Any) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def dicom_export(root: Path) -> Path:
    root.mkdir(parents=True)
    ultrasound(root / "us_burned_in")
    _ct(
        root / "ct_free_text",
        BodyPartExamined="SMITH JOHN",
        ImageType=["ORIGINAL", "PRIMARY", "SMITH JOHN"],
        ViewPosition="DOE JANE",
        PatientOrientation=["JANE", "L"],
        SOPClassUID=f"1.2.826.0.1.3680043.{PATIENT_ID}",
    )
    _ct(root / "ct_photometric", PhotometricInterpretation="SMITH JOHN")
    return root


MIMIC_REPORT = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 indication: 93 year old woman, Ms. Jane Doe, MRN {patient_id}, born January 5, 1932.
 findings: Compared with the study of 03/14/2019 read by Dr. John Smith. Mr. Brown of
 12 Main Street can be reached at 617-555-0199. The lungs are clear. No pleural effusion.
 No focal consolidation. Mild cardiomegaly. Patient is status post CABG. Patient Horatio
 Pennyworth was compared with the CT of the third of May and of 3-May-19. Rosalind
 Quimby, the covering resident, was notified of the findings. He lives at 221B Baker
 Street, phone +44 20 7946 0958. Dr. van der Berglund agrees with attending horatio
 pennyworth on the 2 cm nodule.
 impression: No acute cardiopulmonary process. Quimby was informed. Signed by Ottilie
 Vandersloot. Impression read by BARTHOLOMEW KRUGMANN, resident. NOTIFICATION: Dr. Smith
 discussed the findings with Ms. Doe by telephone at 10:15.
"""


def mimic_export(root: Path) -> Path:
    """The MIMIC sample as a real export: no sample marker, PHI in reports and a view."""
    build_sample_source("mimic_cxr", root.parent)
    (root / "SAMPLE_README.txt").unlink()
    for report in (root / "files").rglob("*.txt"):
        report.write_text(MIMIC_REPORT.format(patient_id=PATIENT_ID), encoding="utf-8")
    with gzip.open(root / METADATA, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["ViewPosition"] = "SMITH JOHN"
    with gzip.open(root / METADATA, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def vqa_rad_export(root: Path) -> Path:
    """The VQA-RAD sample as a real export whose images carry an ICC profile and EXIF
    (JPEGs) or a tEXt chunk and an ICC profile (one re-saved as PNG) naming the patient."""
    build_sample_source("vqa_rad", root.parent)
    (root / "SAMPLE_README.txt").unlink()
    images = sorted(p for p in root.rglob("*.jpg") if p.stat().st_size > 2000)
    exif = Image.Exif()
    exif[0x013B] = NAME  # Artist
    exif[0x010E] = f"{PATIENT_ID} {BIRTH_DATE}"  # ImageDescription
    for index, path in enumerate(images):
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except OSError:  # the sample's truncated JPEG stays as it is
            continue
        if index == 0:
            info = PngInfo()
            info.add_text("Comment", f"{NAME} {PATIENT_ID} {BIRTH_DATE}")
            info.add_itxt("Author", f"SMITH^JOHN {BIRTH_DATE}", zip=True)
            image.save(path, "PNG", pnginfo=info, icc_profile=ICC_WITH_NAME)  # named .jpg
        else:
            image.save(path, "JPEG", quality=90, icc_profile=ICC_WITH_NAME, exif=exif.tobytes())
    return root


# ---------------------------------------------------------------------------- the scanners


def png_chunks(data: bytes) -> list[tuple[str, bytes]]:
    """(type, payload) of every chunk of a PNG; zlib-compressed payloads (iCCP, zTXt, iTXt)
    are given decompressed as well, so their text can be scanned."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8].decode("ascii")
        payload = data[offset + 8 : offset + 8 + length]
        if kind in ("iCCP", "zTXt"):  # keyword NUL method data
            payload += zlib.decompress(payload[payload.index(b"\0") + 2 :])
        elif kind == "iTXt":  # keyword NUL flag method language NUL translated NUL text
            keyword_end = payload.index(b"\0")
            compressed = payload[keyword_end + 1]
            text = payload[keyword_end + 3 :].split(b"\0", 2)[2]
            payload += zlib.decompress(text) if compressed else b""
        chunks.append((kind, payload))
        offset += 12 + length
    return chunks


def _values(value: Any) -> list[str | bytes]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return []


def output_texts(out: Path) -> list[bytes]:
    """Everything an output holds, as bytes to search: every string and binary value of
    every Parquet file (shards and quarantine), each output PNG's ancillary chunks, the
    manifest, and every output file's raw bytes."""
    found: list[bytes] = []
    parquet_files = sorted(out.rglob("*.parquet"))
    assert parquet_files, "nothing was written"
    for path in parquet_files:
        table: pa.Table = pq.read_table(path)
        for column in table.columns:
            for value in column.to_pylist():
                for item in _values(value):
                    data = item.encode() if isinstance(item, str) else item
                    found.append(data)
                    if data[:8] == b"\x89PNG\r\n\x1a\n":
                        found.extend(p for kind, p in png_chunks(data) if kind != "IDAT")
    found.extend(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())
    return found


def assert_no_secret(out: Path) -> None:
    haystack = [data.lower() for data in output_texts(out)]
    for secret in SECRETS:
        needle = secret.lower().encode()
        hits = [data[:100] for data in haystack if needle in data]
        assert not hits, f"{secret!r} reached an output: {hits[:2]}"


def image_chunk_types(out: Path) -> set[str]:
    return {kind for r in records(out) for kind, _ in png_chunks(r["image"]["bytes"])}


# ---------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dicom_out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("planted_dicom")
    run("dicom_folder", dicom_export(base / "export"), base / "out", deid_salt=SALT)
    return base / "out"


@pytest.fixture(scope="module")
def mimic_out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("planted_mimic")
    run("mimic_cxr", mimic_export(base / "mimic_cxr"), base / "out", deid_salt=SALT)
    return base / "out"


@pytest.fixture(scope="module")
def vqa_rad_out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("planted_vqa_rad")
    run("vqa_rad", vqa_rad_export(base / "vqa_rad"), base / "out", deid_salt=SALT)
    return base / "out"


def test_the_scan_finds_a_planted_value(tmp_path):
    """The scanners must be able to fail: text in a PNG chunk and in a column is found."""
    info = PngInfo()
    info.add_text("Comment", NAME)
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "PNG", pnginfo=info, icc_profile=ICC_WITH_NAME)
    table = pa.table({"image": [buffer.getvalue()], "meta": ['{"x": 1}']})
    pq.write_table(table, tmp_path / "shard.parquet", compression="zstd")
    with pytest.raises(AssertionError, match="reached an output"):
        assert_no_secret(tmp_path)


def test_burned_in_ultrasound_reaches_no_shard(dicom_out):
    reasons = [q["reason"] for q in quarantine(dicom_out)]
    assert any("burned-in text rule 'ultrasound modality'" in r for r in reasons), reasons
    assert {json.loads(r["meta"])["sop_class"] for r in records(dicom_out)} == {
        "unknown SOP class"
    }  # the one CT left; no record of the ultrasound


def test_free_text_in_allow_listed_dicom_fields_becomes_unknown(dicom_out):
    (record,) = records(dicom_out)
    meta = json.loads(record["meta"])
    assert record["body_part"] == "unknown"
    assert meta["image_type"] == ["ORIGINAL", "PRIMARY", "unknown"]
    assert meta["view_position"] == "unknown"
    assert meta["patient_orientation"] == ["unknown", "L"]


def test_no_planted_phi_in_dicom_outputs(dicom_out):
    assert_no_secret(dicom_out)


def test_no_planted_phi_in_mimic_outputs(mimic_out):
    texts = {r["text"] for r in records(mimic_out)}
    assert texts == {
        "FINDINGS: Mr. ___ of ___ can be reached at ___. The lungs are clear. No pleural "
        "effusion. No focal consolidation. Mild cardiomegaly. Patient is status post CABG. "
        "Patient ___ was compared with the CT of ___ and of ___. ___ ___, the covering "
        "resident, was notified of the findings. He lives at ___, phone ___. Dr. ___ agrees "
        "with attending ___ on the 2 cm nodule.\n"
        "IMPRESSION: No acute cardiopulmonary process. ___ was informed."
    }
    manifest = json.loads((mimic_out / "_manifest.json").read_text())
    assert manifest["summary"]["skipped_by_config"]["view unknown (frontal_only)"] == 1
    assert_no_secret(mimic_out)


def test_no_icc_profile_exif_or_text_chunk_in_output_images(vqa_rad_out):
    assert image_chunk_types(vqa_rad_out) == {"IHDR", "IDAT", "IEND"}
    assert_no_secret(vqa_rad_out)
