from __future__ import annotations

import io
import logging
import signal
import stat

import numpy as np
import pydicom
import pydicom.datadict
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom.data import get_testdata_file

from healthgpt.data.decode.deid import (
    ALLOWED_KEYWORDS,
    BURNED_IN_RULES,
    PHI_KEYWORDS,
    PUBLIC_SAMPLE_SALT,
    SALT_ENV,
    SAMPLE_MARKER,
    SCRUB_PATTERNS,
    UNKNOWN,
    SaltError,
    burned_in_rule,
    installation_salt,
    is_bundled_sample,
    is_uid,
    not_a_sample,
    pseudonym,
    salt_for_source,
    scrub_text,
    vocabulary_value,
)
from healthgpt.data.decode.dicom import read_dicom
from healthgpt.data.decode.imaging import encode_png
from healthgpt.data.samples.seal import sealed
from healthgpt.data.sources.base import BadInput, ReaderOptions
from healthgpt.data.sources.mimic_cxr import parse_report, report_text
from tests.data.outputs import quarantine, records, run
from tests.data.test_planted_phi import ICC_WITH_NAME, png_chunks, ultrasound


def test_allow_list_holds_no_confidentiality_profile_attribute():
    assert ALLOWED_KEYWORDS.isdisjoint(PHI_KEYWORDS)


def test_every_listed_keyword_is_a_real_dicom_attribute():
    unknown = {
        k for k in ALLOWED_KEYWORDS | PHI_KEYWORDS if pydicom.datadict.tag_for_keyword(k) is None
    }
    assert unknown == set()


def test_pseudonyms_are_stable_per_salt_and_hide_the_value():
    first = pseudonym("p10000032", "salt-a")
    assert first == pseudonym("p10000032", "salt-a")
    assert first != pseudonym("p10000032", "salt-b")
    assert first != pseudonym("p10000033", "salt-a")
    assert "10000032" not in first


# ------------------------------------------------------------------------------------ salt


def test_pseudonym_refuses_a_missing_salt():
    with pytest.raises(ValueError, match="no de-identification salt"):
        pseudonym("1234567", None)


def test_salt_rule_environment_then_sample_then_private_file(tmp_path, monkeypatch):
    salt_file = tmp_path / "secrets" / "deid_salt"
    monkeypatch.setenv("HEALTHGPT_DEID_SALT_FILE", str(salt_file))
    monkeypatch.delenv(SALT_ENV, raising=False)
    sample, real = tmp_path / "sample", tmp_path / "real"
    sample.mkdir()
    real.mkdir()
    made_up_sample(sample)
    assert salt_for_source(sample) == PUBLIC_SAMPLE_SALT
    assert not salt_file.exists()
    private = salt_for_source(real)
    assert private != PUBLIC_SAMPLE_SALT and len(private) == 64  # 256 random bits
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert salt_for_source(real) == private  # once per installation
    monkeypatch.setenv(SALT_ENV, "from-the-environment")
    assert salt_for_source(real) == salt_for_source(sample) == "from-the-environment"


@sealed
def made_up_sample(dest):
    """A sample generator in miniature: two files and the marker."""
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "images" / "a.jpg").write_bytes(b"made-up image")
    (dest / "rows.json").write_text("[]")
    (dest / SAMPLE_MARKER).write_text("sample\n")


def test_a_marker_alone_does_not_make_real_data_a_sample(tmp_path, monkeypatch, caplog):
    """A copied or touched SAMPLE_README.txt once gave real data the public salt."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    (tmp_path / "IM0001").write_bytes(b"real patient data")
    (tmp_path / SAMPLE_MARKER).write_text("")
    with caplog.at_level(logging.WARNING, logger="healthgpt.data.decode.deid"):
        salt = salt_for_source(tmp_path)
    assert salt != PUBLIC_SAMPLE_SALT and len(salt) == 64
    assert "is not a bundled sample (SAMPLE_README.txt lists no file hashes)" in caplog.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda root: (root / "IM0001").write_bytes(b"real"), "a file not listed"),
        (lambda root: (root / "rows.json").write_text('["real"]'), "hash differs"),
        (lambda root: (root / "images" / "a.jpg").write_bytes(b"made-up imagE"), "hash differs"),
        (lambda root: (root / "real").symlink_to(root / "images"), "symbolic link"),
    ],
)
def test_a_sealed_sample_stops_being_one_when_a_file_is_not_its_own(tmp_path, change, reason):
    made_up_sample(tmp_path)
    assert is_bundled_sample(tmp_path)
    change(tmp_path)
    assert reason in not_a_sample(tmp_path)
    assert salt_for_source(tmp_path) != PUBLIC_SAMPLE_SALT


def test_the_seal_lists_only_what_the_generator_wrote(tmp_path):
    (tmp_path / "IM0001").write_bytes(b"already there")
    made_up_sample(tmp_path)
    assert "a file not listed" in not_a_sample(tmp_path)
    (tmp_path / "IM0001").unlink()
    made_up_sample(tmp_path)  # a rebuild lists the same files once
    assert is_bundled_sample(tmp_path)
    assert (tmp_path / SAMPLE_MARKER).read_text().count("rows.json") == 1


def test_a_short_environment_salt_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(SALT_ENV, "a")
    with pytest.raises(SaltError, match="1 characters long; a salt needs at least 16"):
        salt_for_source(tmp_path)


@pytest.mark.parametrize("content", ["", "short\n"])
def test_an_empty_or_short_salt_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "deid_salt"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SaltError, match="holds no usable salt"):
        installation_salt(path)


def test_cli_reports_a_bad_salt_in_one_line(tmp_path, monkeypatch, capsys):
    from healthgpt.cli import main

    monkeypatch.setenv(SALT_ENV, "a")
    root = tmp_path / "root"
    root.mkdir()
    argv = ["ingest", "dicom_folder", "--root", str(root), "--out", str(tmp_path / "o")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("healthgpt ingest: error: HEALTHGPT_DEID_SALT is 1 characters")
    assert "\n" not in err and "Traceback" not in err


def test_salt_file_creation_is_loud(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="healthgpt.data.decode.deid"):
        installation_salt(tmp_path / "deid_salt")
        installation_salt(tmp_path / "deid_salt")
    notices = [r for r in caplog.records if "private de-identification salt" in r.getMessage()]
    assert len(notices) == 1 and str(tmp_path / "deid_salt") in notices[0].getMessage()


def test_public_salt_chosen_by_hand_for_real_data_is_warned_about(tmp_path, caplog):
    from healthgpt.data.sources.dicom_folder import DicomFolderReader

    with caplog.at_level(logging.WARNING, logger="healthgpt.data.decode.deid"):
        DicomFolderReader(tmp_path, ReaderOptions(deid_salt=PUBLIC_SAMPLE_SALT))
    assert "public sample salt" in caplog.text


def test_cli_salt_defaults_to_the_rule_and_offers_the_opt_in():
    from healthgpt.cli import build_parser

    args = build_parser().parse_args(["ingest", "dicom_folder", "--root", "r", "--out", "o"])
    assert args.salt is None and args.burned_in_reviewed is False
    args = build_parser().parse_args(
        ["ingest", "dicom_folder", "--root", "r", "--out", "o", "--burned-in-reviewed"]
    )
    assert args.burned_in_reviewed is True


def test_a_salt_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "deid_salt"
    installation_salt(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        installation_salt(path)


def test_real_source_ingest_uses_the_private_salt(tmp_path, monkeypatch):
    """Without HEALTHGPT_DEID_SALT a real source gets the installation's 0600 salt file, and
    the public-salt brute force that recovered a 7-digit PatientID finds nothing."""
    salt_file = tmp_path / "secrets" / "deid_salt"
    monkeypatch.setenv("HEALTHGPT_DEID_SALT_FILE", str(salt_file))
    monkeypatch.delenv(SALT_ENV, raising=False)
    root = tmp_path / "export"
    root.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "1234567"
    ds.save_as(root / "IM0001")
    run("dicom_folder", root, tmp_path / "out")
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    (subject,) = {r["subject_id"] for r in records(tmp_path / "out")}
    public = pseudonym("1234567", PUBLIC_SAMPLE_SALT, prefix="subj")
    assert subject != public

    def brute_force(target: str, salt: str) -> str | None:
        for number in range(1_233_000, 1_236_000):  # a window of the 10^7 id space
            if pseudonym(f"{number:07d}", salt, prefix="subj") == target:
                return f"{number:07d}"
        return None

    assert brute_force(public, PUBLIC_SAMPLE_SALT) == "1234567"  # what the attack did
    assert brute_force(subject, PUBLIC_SAMPLE_SALT) is None
    assert subject == pseudonym("1234567", salt_file.read_text().strip(), prefix="subj")


# ------------------------------------------------------------------------- burned-in text


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ({"Modality": "US"}, "ultrasound modality"),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.6.1"}, "ultrasound SOP"),
        ({"Modality": "NM", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "secondary capture"),
        ({"Modality": "DOC"}, "screen capture or document modality"),
        ({"Modality": "CT", "ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "screen"),
        (
            {"Modality": "CT", "Manufacturer": "GE MEDICAL SYSTEMS",
             "ManufacturerModelName": "LightSpeed VCT"},
            "GE LightSpeed VCT",
        ),
        (
            {"Modality": "PT", "Manufacturer": "Philips", "ManufacturerModelName": "GEMINI TF"},
            "Philips GEMINI",
        ),
        ({"Modality": "MR", "BurnedInAnnotation": "YES"}, "BurnedInAnnotation YES"),
        # the whole visible light family, whatever the modality says
        ({"Modality": "ES", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.4"}, "visible light"),
        ({"Modality": "OP", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.5.1"}, "visible light"),
        ({"Modality": "GM", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.4"}, "visible light"),
        ({"Modality": "ES"}, "visible light photography modality"),
        ({"Modality": "SM", "ImageType": ["DERIVED", "PRIMARY", "LABEL"]}, "visible light"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "OVERVIEW"]}, "slide label or overview"),
        # projection radiography unless the file says NO
        ({"Modality": "CR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1"}, "projection"),
        ({"Modality": "DX"}, "projection radiography"),
        ({"Modality": "XA", "BurnedInAnnotation": ""}, "projection radiography"),
        ({"Modality": "RF"}, "projection radiography"),
        # captures of a screen, and values padded with NULs, spaces or lower case
        ({"Modality": "MR", "ImageType": ["DERIVED", "SECONDARY", "OTHER"]}, "derived second"),
        ({"Modality": "PT", "ImageType": "DERIVED\\SECONDARY"}, "derived secondary"),
        ({"Modality": "MR", "ImageType": ["DERIVED", " screen  save\x00"]}, "screen capture"),
        ({"Modality": "US\x00"}, "ultrasound modality"),
        ({"Modality": "US", "BurnedInAnnotation": "NO"}, "ultrasound modality"),
        ({"Modality": b"us "}, "ultrasound modality"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.4\x00"}, "visible light"),
        ({"Modality": "CR", "BurnedInAnnotation": "yes\x00"}, "BurnedInAnnotation YES"),
    ],
)  # fmt: skip
def test_burned_in_rules_name_the_rule(header, rule):
    found = burned_in_rule(header)
    assert found is not None and found.startswith(rule)
    reviewed = burned_in_rule(header, reviewed=True)
    assert reviewed == ("BurnedInAnnotation YES" if rule == "BurnedInAnnotation YES" else None)


@pytest.mark.parametrize(
    "header",
    [
        {"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "ImageType": ["ORIGINAL"]},
        {"Modality": "MR", "Manufacturer": "Agfa-Gevaert", "ImageType": ["DERIVED", "PRIMARY"]},
        {"Modality": "CR", "BurnedInAnnotation": "NO"},
        {"Modality": "DX", "BurnedInAnnotation": " no\x00"},
        {"Modality": "MR", "ImageType": ["DERIVED", "SECONDARY"], "BurnedInAnnotation": "NO"},
        {"Modality": "MG"},
    ],
)
def test_plain_acquisitions_match_no_rule(header):
    assert burned_in_rule(header) is None


def test_every_rule_has_a_condition_and_a_unique_name():
    names = [rule.name for rule in BURNED_IN_RULES]
    assert len(names) == len(set(names))
    for rule in BURNED_IN_RULES:
        conditions = (
            rule.modalities, rule.sop_classes, rule.sop_prefix, rule.image_type,
            rule.image_type_all, rule.manufacturer,
        )  # fmt: skip
        assert any(conditions) or rule.model


def test_ultrasound_dicom_is_quarantined_naming_the_rule(tmp_path):
    path = tmp_path / "us.dcm"
    ultrasound(path)
    options = ReaderOptions(deid_salt="s")
    with pytest.raises(BadInput, match="burned-in text rule 'ultrasound modality'"):
        read_dicom(path, options)
    assert read_dicom(path, ReaderOptions(deid_salt="s", burned_in_reviewed=True)).frames


# --------------------------------------------------------------- allow-listed header values


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("BodyPartExamined", "SMITH JOHN", UNKNOWN),
        ("BodyPartExamined", " chest ", "CHEST"),
        ("ViewPosition", "JOHN SMITH", UNKNOWN),
        ("ViewPosition", "pa", "PA"),
        ("PhotometricInterpretation", "DOE^JANE", UNKNOWN),
        ("ImageType", "AXIAL", "AXIAL"),
        ("ImageType", "DOE JANE", UNKNOWN),
        ("PatientOrientation", "L", "L"),
        ("PatientOrientation", "SMITH", UNKNOWN),
        ("Modality", "ECG", "ECG"),
        ("Modality", "", None),
    ],
)
def test_vocabulary_values(keyword, value, expected):
    assert vocabulary_value(keyword, value) == expected


def test_uid_syntax():
    assert is_uid("1.2.840.10008.5.1.4.1.1.2")
    for bad in ("SMITH^JOHN", "1.02.3", "1..2", "1.2." + "3" * 70, ""):
        assert not is_uid(bad)


def test_free_text_in_allow_listed_fields_becomes_unknown(tmp_path):
    path = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BodyPartExamined = "SMITH JOHN"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SMITH JOHN"]
    ds.ViewPosition = "DOE JANE"
    ds.PatientOrientation = ["SMITH", "L"]
    ds.SOPClassUID = "1.2.826.0.1.3680043.1234567"
    ds.save_as(path)
    image = read_dicom(path, ReaderOptions(deid_salt="s"))
    assert image.body_part == UNKNOWN
    assert image.facts["image_type"] == ["ORIGINAL", "PRIMARY", UNKNOWN]
    assert image.facts["view_position"] == UNKNOWN
    assert image.facts["patient_orientation"] == [UNKNOWN, "L"]
    assert image.facts["sop_class"] == "unknown SOP class"
    assert "SMITH" not in repr(image.facts) and "1234567" not in repr(image.facts)


def test_odd_header_values_stay_out_of_quarantine_reasons(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "SMITH JOHN"
    ds.save_as(tmp_path / "photometric.dcm")
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.SOPClassUID = "DOE^JANE^1234567"  # pydicom warns, and writes it all the same
    ds.save_as(tmp_path / "sop.dcm")
    for name in ("photometric.dcm", "sop.dcm"):
        with pytest.raises(BadInput) as error:
            read_dicom(tmp_path / name, ReaderOptions(deid_salt="s"))
        for secret in ("SMITH", "JOHN", "DOE", "JANE", "1234567"):
            assert secret not in str(error.value)


# -------------------------------------------------------------------------- PNG ancillary


def test_png_output_has_no_ancillary_chunk_of_the_source():
    source = Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    info = PngInfo()
    info.add_text("Author", "DOE^JANE MRN12345678")
    buffer = io.BytesIO()
    source.save(buffer, "PNG", pnginfo=info, icc_profile=ICC_WITH_NAME)
    assert b"DOE^JANE" in buffer.getvalue()  # the source really carries both
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    assert decoded.info.get("icc_profile") == ICC_WITH_NAME
    out = encode_png(decoded, 32)
    assert [kind for kind, _ in png_chunks(out)] == ["IHDR", "IDAT", "IEND"]
    assert b"DOE" not in out and b"JANE" not in out


# ---------------------------------------------------------------------------- report text


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        ("Discussed with Dr. John Smith at 10:15 AM.", ["John", "Smith", "10:15"]),
        ("Seen by dr. smith, Mr. O'Brien and Ms. Jane Doe.", ["smith", "O'Brien", "Jane", "Doe"]),
        ("Reviewed by John Smith, MD.", ["John", "Smith"]),
        ("Prior 03/14/2019, 2019-03-14, 3-14-19, 14 March 2019, Mar. 14, 2019.", ["14", "2019"]),
        ("Call (617) 555-1234, 617.555.1234 or pager 4-5678.", ["555", "1234", "5678"]),
        ("MRN: AB1234567, Accession 987654321, unit no 12345.", ["1234567", "987654321", "12345"]),
        ("Lives at 12 Main Street, Apt 4.", ["Main", "Street"]),
        ("A 93-year-old man; age 101.", ["93", "101"]),
        ("Email jane.doe@example.org or see http://intranet.example.org/p/1.", ["jane", "example"]),
        # names without a title, in the phrasing of MIMIC reports
        ("Jane Roe, the covering resident, was notified of the findings.", ["Jane", "Roe"]),
        ("Patient John Smith was seen. Patient John A. Smith, DOB 01/02/1950.", ["John", "Smith"]),
        ("No change. Signed by Jane Roe.", ["Jane", "Roe"]),
        ("Impression read by RICHARD ROE, resident.", ["RICHARD", "ROE"]),
        ("Smith was informed.", ["Smith"]),
        ("Agrees with attending john smith on the nodule.", ["john", "smith"]),
        ("Signed: J. Smith. Referring: smith, john.", ["smith", "john"]),
        ("Dr. van der Berg and Dr. O'Brien reviewed.", ["Berg", "der", "O'Brien"]),
        ("Compared with CT from the third of May and 3-May-19 and 03May2019.", ["third", "May"]),
        ("Lives at 221B Baker Street.", ["221", "Baker"]),
        ("Call +44 20 7946 0958 or +1 617 555 0199.", ["7946", "0958", "555"]),
        ("Unit No. 554433; A-12-345-6.", ["554433", "12-345"]),
    ],
)
def test_scrub_patterns(text, secrets):
    scrubbed = scrub_text(text)
    for secret in secrets:
        assert secret.lower() not in scrubbed.lower(), scrubbed


def test_scrub_keeps_clinical_text_and_mimic_placeholders():
    text = (
        "PA and lateral views of the chest compared with ___. Dr. ___ was informed. "
        "A 5 mm nodule at T2/T3, C5/6; 2 cm effusion. A 45-year-old man."
    )
    assert scrub_text(text) == (
        "PA and lateral views of the chest compared with ___. Dr. ___ was informed. "
        "A 5 mm nodule at T2/T3, C5/6; 2 cm effusion. A 45-year-old man."
    )


@pytest.mark.parametrize(
    "text",
    [
        "No focal consolidation. Mild cardiomegaly. Patient is status post CABG.",
        "The patient has a right PICC with tip in the SVC. Heart size is normal.",
        "Findings were reviewed. The attending radiologist agrees. Stable since May.",
        "Compared to the prior radiograph, the ET tube is 4 cm above the carina.",
        "Moderate pulmonary edema. Patient denies chest pain. Second opinion requested.",
    ],
)
def test_scrub_keeps_mimic_clinical_text(text):
    assert scrub_text(text) == text


ADVERSARIAL = {
    "hyphens": "-" * 200_000,
    "letters and hyphens": "a-" * 100_000,
    "capitals and hyphens": "A-" * 100_000,
    "words of a name": "Aa " * 66_666,
    "communication keywords": "called " * 28_571,
    "whitespace after a label": "x" + " " * 200_000,
    "at signs": "a@" * 100_000,
    "dotted digits": "1." * 100_000,
    "international prefix": "+44" + " 1" * 100_000,
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_scrubbing_adversarial_text_ends(name):
    """The long digit run pattern took 97 s on 40 KB of hyphens (quadratic). A generous
    guard, not a timing goal: a linear scrubber ends far inside it, the old one did not."""

    def too_slow(*_):
        raise TimeoutError(f"scrubbing 200 KB of {name} did not end within 10 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        scrub_text(ADVERSARIAL[name])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_report_over_the_limit_is_refused_before_scrubbing(tmp_path, monkeypatch):
    from healthgpt.data.samples import mimic_cxr as mimic_sample
    from healthgpt.data.sources import mimic_cxr

    def scrub_within_limit(text: str) -> str:
        assert len(text) <= 1000, "a report over max_text_chars reached the scrubber"
        return scrub_text(text)

    monkeypatch.setattr(mimic_cxr, "scrub_text", scrub_within_limit)
    mimic_sample.build(tmp_path / "src")
    report = next((tmp_path / "src" / "files").rglob("*.txt"))
    report.write_text("FINDINGS: " + "-" * 1500 + "\n")
    run("mimic_cxr", tmp_path / "src", tmp_path / "out", extra={"limits": {"max_text_chars": 1000}})
    reasons = {q["reason"] for q in quarantine(tmp_path / "out")}
    assert "report of 1,511 characters exceeds limit max_text_chars=1,000" in reasons


def test_every_pattern_is_named_once():
    names = [name for name, _, _ in SCRUB_PATTERNS]
    assert len(names) == len(set(names))


def test_mimic_report_notification_and_lower_case_headings():
    report = (
        "indication: 93F, call Dr. Smith at 617-555-1234.\n"
        "findings: Lungs: clear. No effusion.\n"
        "impression: No acute process. NOTIFICATION: Dr. Jones paged at 10:15 on 3/4.\n"
    )
    sections = parse_report(report)
    assert sections == {
        "findings": "Lungs: clear. No effusion.",
        "impression": "No acute process. NOTIFICATION: Dr. Jones paged at 10:15 on 3/4.",
    }
    assert report_text(sections) == (
        "FINDINGS: Lungs: clear. No effusion.\nIMPRESSION: No acute process."
    )
