"""DICOM decoding on real files from pydicom's and pydicom-data's test sets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from healthgpt.data.decode.deid import ALLOWED_KEYWORDS
from healthgpt.data.decode.dicom import DEFAULT_CT_WINDOW, FACT_KEYS, read_dicom
from healthgpt.data.decode.imaging import scale_to_uint8
from healthgpt.data.sources.base import BadInput, ReaderOptions

# Decoding tests read secondary captures and ultrasound too: the burned-in text rules are
# tested on their own below.
OPTIONS = ReaderOptions(deid_salt="test-salt", burned_in_reviewed=True)


def sample_file(name: str) -> Path:
    return Path(get_testdata_file(name))


def copy_with(tmp_path: Path, name: str, **attributes) -> Path:
    """A copy of a test file with some header attributes changed."""
    ds = pydicom.dcmread(sample_file(name))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = tmp_path / f"edited_{name}"
    ds.save_as(out)
    return out


def test_ct_rescale_gives_hounsfield_units():
    ds = pydicom.dcmread(sample_file("CT_small.dcm"))
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
    hu = ds.pixel_array.astype(np.float64) * 1 - 1024
    image = read_dicom(sample_file("CT_small.dcm"), OPTIONS)
    assert image.modality == "CT"
    np.testing.assert_array_equal(image.frames[0], scale_to_uint8(hu, *DEFAULT_CT_WINDOW))


def test_ct_intercept_shift_is_a_window_shift(tmp_path):
    """+100 HU on the intercept seen through a window moved by +100 HU: the same picture."""
    shifted = copy_with(tmp_path, "CT_small.dcm", RescaleIntercept=-924)
    lo, hi = DEFAULT_CT_WINDOW
    base = read_dicom(sample_file("CT_small.dcm"), OPTIONS).frames[0]
    moved = read_dicom(shifted, OPTIONS, ct_window=(lo + 100, hi + 100)).frames[0]
    np.testing.assert_array_equal(base, moved)
    assert not np.array_equal(base, read_dicom(shifted, OPTIONS).frames[0])


def test_ct_slope_is_applied(tmp_path):
    doubled = copy_with(tmp_path, "CT_small.dcm", RescaleSlope=2, RescaleIntercept=0)
    raw = pydicom.dcmread(sample_file("CT_small.dcm")).pixel_array.astype(np.float64)
    image = read_dicom(doubled, OPTIONS, ct_window=(0.0, 4000.0))
    np.testing.assert_array_equal(image.frames[0], scale_to_uint8(raw * 2, 0.0, 4000.0))


def test_ct_window_from_options():
    wide = replace(OPTIONS, extra={"dicom_ct_window": (-1000.0, 1000.0)})
    narrow = read_dicom(sample_file("CT_small.dcm"), OPTIONS).frames[0]
    assert read_dicom(sample_file("CT_small.dcm"), wide).frames[0].std() < narrow.std()


def test_monochrome1_is_inverted(tmp_path):
    inverted = copy_with(tmp_path, "MR_small.dcm", PhotometricInterpretation="MONOCHROME1")
    normal = read_dicom(sample_file("MR_small.dcm"), OPTIONS).frames[0]
    np.testing.assert_array_equal(read_dicom(inverted, OPTIONS).frames[0], 255 - normal)


def test_cr_chest_monochrome1_reads_bone_bright():
    image = read_dicom(sample_file("RG1_UNCI.dcm"), OPTIONS)
    frame = image.frames[0]
    assert image.modality == "X-Ray" and image.body_part == "chest"
    assert image.facts["photometric"] == "MONOCHROME1" and image.facts["view_position"] == "PA"
    # lungs (dark) sit left and right of the bright mediastinum in the middle row band
    band = frame[frame.shape[0] // 3 : frame.shape[0] // 2]
    middle = band[:, frame.shape[1] * 4 // 10 : frame.shape[1] * 6 // 10].mean()
    lung = band[:, frame.shape[1] // 5 : frame.shape[1] // 3].mean()
    assert middle > lung + 30


def test_header_window_is_used_for_mr():
    image = read_dicom(sample_file("MR_small.dcm"), OPTIONS)  # WC 600 / WW 1600 in the header
    raw = pydicom.dcmread(sample_file("MR_small.dcm")).pixel_array.astype(np.float64)
    lo, hi = 600 - 0.5 - (1600 - 1) / 2, 600 - 0.5 + (1600 - 1) / 2
    assert np.abs(image.frames[0].astype(int) - scale_to_uint8(raw, lo, hi)).max() <= 1


def test_multiframe_gives_every_frame():
    image = read_dicom(sample_file("emri_small.dcm"), OPTIONS)
    assert len(image.frames) == 10 and image.facts["n_frames"] == 10
    assert all(f.shape == (64, 64) and f.dtype == np.uint8 for f in image.frames)
    assert len({f.tobytes() for f in image.frames}) == 10
    assert image.modality == "MRI" and image.body_part == "head"


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("693_J2KR.dcm", "693_UNCR.dcm"),
        ("SC_rgb_rle.dcm", "SC_rgb.dcm"),
    ],
)
def test_lossless_syntaxes_decode_identically(compressed, reference):
    a = read_dicom(sample_file(compressed), OPTIONS).frames
    b = read_dicom(sample_file(reference), OPTIONS).frames
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm", "JPEG-LL.dcm", "693_J2KI.dcm"])
def test_lossy_and_lossless_jpeg_family_decodes(name):
    frame = read_dicom(sample_file(name), OPTIONS).frames[0]
    assert frame.dtype == np.uint8 and frame.ndim == 2 and frame.std() > 5


@pytest.mark.parametrize(
    "name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_uncompressed.dcm", "SC_rgb_jpeg_gdcm.dcm"]
)
def test_ybr_becomes_rgb(name):
    """SC_rgb's first band is pure red; decoded YBR files must show red, not luma."""
    frame = read_dicom(sample_file(name), OPTIONS).frames[0]
    assert frame.shape == (100, 100, 3)
    red = frame[2, 50].astype(int)
    assert red[0] > 200 and red[1] < 40 and red[2] < 40


def test_palette_colour_becomes_rgb():
    frame = read_dicom(sample_file("OBXXXX1A.dcm"), OPTIONS).frames[0]
    assert frame.shape == (600, 800, 3) and frame.dtype == np.uint8 and frame.max() > 200


def test_voi_lut_sequence_uses_full_range():
    frame = read_dicom(sample_file("vlut_04.dcm"), OPTIONS).frames[0]
    assert frame.min() == 0 and frame.max() == 255


def test_dicom_without_file_meta_still_decodes():
    frame = read_dicom(sample_file("OT-PAL-8-face.dcm"), OPTIONS).frames[0]
    assert frame.shape == (480, 640, 3)


@pytest.mark.parametrize(
    ("name", "sop_class"),
    [
        ("rtplan.dcm", "RT Plan Storage"),
        ("test-SR.dcm", "Comprehensive SR Storage"),
        ("waveform_ecg.dcm", "12-lead ECG Waveform Storage"),
    ],
)
def test_non_image_dicom_is_refused(name, sop_class):
    with pytest.raises(BadInput, match=rf"non-image DICOM \(SOP class {sop_class}\)"):
        read_dicom(sample_file(name), OPTIONS)


@pytest.mark.parametrize("name", ["liver.dcm", "rtdose.dcm"])
def test_label_maps_and_dose_grids_are_refused(name):
    with pytest.raises(BadInput, match="non-anatomical DICOM image"):
        read_dicom(sample_file(name), OPTIONS)


def test_not_dicom(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("Patient DOE^JANE follow-up\n" * 20)
    with pytest.raises(BadInput, match="not a DICOM file"):
        read_dicom(text, OPTIONS)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="empty"):
        read_dicom(empty, OPTIONS)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_truncated_copies_are_refused_without_the_path(tmp_path, fraction):
    folder = tmp_path / "DOE_JANE_MRN12345678"
    folder.mkdir()
    data = sample_file("CT_small.dcm").read_bytes()
    cut = folder / "IM0001"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(BadInput) as info:
        read_dicom(cut, OPTIONS)
    assert "DOE_JANE" not in str(info.value) and "IM0001" not in str(info.value)


def test_pydicom_truncated_files_are_refused():
    with pytest.raises(BadInput, match="truncated"):
        read_dicom(sample_file("MR_truncated.dcm"), OPTIONS)
    with pytest.raises(BadInput, match="truncated"):
        read_dicom(sample_file("emri_small_jpeg_2k_lossless_too_short.dcm"), OPTIONS)


def test_corrupt_compressed_pixel_data_is_refused(tmp_path):
    ds = pydicom.dcmread(sample_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"])
    bad = tmp_path / "bad_jls.dcm"
    ds.save_as(bad)
    with pytest.raises(BadInput, match=r"undecodable pixel data \(JPEG-LS Lossless"):
        read_dicom(bad, OPTIONS)


def test_jpeg_no_plugin_can_decode_is_refused():
    """pydicom's JPEG-lossy.dcm (12-bit JPEG extended) defeats both libjpeg and Pillow."""
    with pytest.raises(BadInput, match=r"undecodable pixel data \(JPEG Extended"):
        read_dicom(sample_file("JPEG-lossy.dcm"), OPTIONS)


def test_burned_in_annotation_is_refused(tmp_path):
    flagged = copy_with(tmp_path, "MR_small.dcm", BurnedInAnnotation="YES")
    with pytest.raises(BadInput, match="burned-in annotation"):
        read_dicom(flagged, OPTIONS)


def test_facts_are_allow_listed_and_free_of_phi(tmp_path):
    planted = {
        "PatientName": "DOE^JANE",
        "PatientID": "MRN12345678",
        "InstitutionName": "St Example Hospital",
        "AccessionNumber": "ACC20240001",
        "PatientBirthDate": "19700101",
        "BodyPartExamined": "HEAD",
    }
    image = read_dicom(copy_with(tmp_path, "CT_small.dcm", **planted), OPTIONS)
    assert set(image.facts) <= {*FACT_KEYS.values(), "sop_class"}
    assert set(FACT_KEYS) <= ALLOWED_KEYWORDS
    text = repr(image.facts) + repr(image.body_part) + repr(image.subject_id)
    for value in planted.values():
        if value != "HEAD":
            assert value.lower() not in text.lower()
    assert image.body_part == "head"
    assert image.subject_id and image.subject_id.startswith("subj-")


def test_subject_pseudonym_depends_on_salt(tmp_path):
    path = copy_with(tmp_path, "CT_small.dcm", PatientID="MRN12345678")
    a = read_dicom(path, OPTIONS).subject_id
    b = read_dicom(path, replace(OPTIONS, deid_salt="other")).subject_id
    assert a != b and a == read_dicom(path, OPTIONS).subject_id
