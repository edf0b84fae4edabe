"""De-identification: what counts as PHI, how identifiers become pseudonyms, which pixels may
carry burned-in text, which header values may be copied, and how report text is scrubbed.

Readers never copy a header string into a record unless it is on the allow list below; this
is safer than scrubbing a deny list, because a DICOM export can carry PHI in any private or
free-text tag. The deny list (`PHI_KEYWORDS`, after DICOM PS3.15 Annex E, Basic Application
Level Confidentiality Profile) documents what must never be allow-listed; a test keeps
the two lists disjoint.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from healthgpt import paths
from healthgpt.settings import settings
from healthgpt.storage import file_sha256

log = logging.getLogger(__name__)

# Header attributes that may be copied into records: technical, not about the person.
ALLOWED_KEYWORDS = frozenset(
    {
        "Modality",
        "BodyPartExamined",
        "ViewPosition",
        "PatientOrientation",
        "ImageType",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "SliceThickness",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
        "WindowCenter",
        "WindowWidth",
        "SOPClassUID",
        "MRAcquisitionType",
        "ScanningSequence",
    }
)

# PS3.15 Annex E basic profile (the attributes most often populated in practice).
PHI_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "PatientAge",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientMotherBirthName",
        "MilitaryRank",
        "EthnicGroup",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientComments",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "StationName",
        "DeviceSerialNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "StudyDescription",
        "SeriesDescription",
        "RequestedProcedureDescription",
        "ImageComments",
    }
)


def pseudonym(value: str, salt: str | None, prefix: str = "anon") -> str:
    """A salted, keyed hash of an identifier: stable for one salt, unlinkable without it."""
    if not salt:
        raise ValueError("no de-identification salt (see deid.salt_for_source)")
    text = str(value).encode("utf-8", errors="surrogateescape")
    digest = hmac.new(salt.encode(), text, hashlib.sha256).hexdigest()[:16]
    return f"{prefix}-{digest}"


# ------------------------------------------------------------------------------------ salt
#
# Pseudonyms of short identifiers (a 7-digit PatientID, a MIMIC subject id) are reversible
# by brute force with the salt: 10^7 HMACs take seconds. The salt must therefore be secret
# for real data. Only the bundled samples, whose identifiers are made up and public anyway,
# use the public salt below, so the demo's outputs stay byte-identical on every machine.

PUBLIC_SAMPLE_SALT = "healthgpt-public-demo-salt"
SALT_ENV = "HEALTHGPT_DEID_SALT"
MIN_SALT_CHARS = 16
"""Shortest salt accepted from the environment: a short one is guessed before the ids are."""
SAMPLE_MARKER = "SAMPLE_README.txt"
"""The file every bundled sample source holds at its root (`healthgpt sample-sources`): its
text, then the sha256 and size of every file the generator wrote there (`seal_sample`)."""
_MANIFEST_HEADER = "-- sha256, size and path of every file the sample generator wrote here --"


class SaltError(ValueError):
    """A configured salt or salt file that cannot protect pseudonyms (empty, too short)."""


def seal_sample(root: str | Path, written: Iterable[Path]) -> Path:
    """Append to the marker at `root` the hash of each file in `written` (the generator's
    own files), so a copied marker cannot make real data count as a sample."""
    root = Path(root)
    marker = root / SAMPLE_MARKER
    text = marker.read_text(encoding="utf-8").split(_MANIFEST_HEADER)[0].rstrip("\n")
    lines = []
    for path in sorted(Path(p) for p in written):
        relative = path.relative_to(root).as_posix()
        if relative != SAMPLE_MARKER:
            lines.append(f"{file_sha256(path)} {path.stat().st_size} {relative}")
    marker.write_text(f"{text}\n\n{_MANIFEST_HEADER}\n" + "\n".join(lines) + "\n", "utf-8")
    return marker


def not_a_sample(root: str | Path) -> str | None:
    """Why `root` is not a bundled sample, or None when it is one: every file under it is
    listed in its marker with a matching size and hash. The walk stops at the first file
    that is not, so real data is told apart after one file."""
    root = Path(root)
    marker = root / SAMPLE_MARKER
    if not marker.is_file():
        return f"no {SAMPLE_MARKER}"
    text = marker.read_text(encoding="utf-8", errors="replace")
    if _MANIFEST_HEADER not in text:
        return f"{SAMPLE_MARKER} lists no file hashes"
    listed: dict[str, tuple[str, int]] = {}
    for line in text.split(_MANIFEST_HEADER, 1)[1].splitlines():
        digest, _, rest = line.partition(" ")
        size, _, relative = rest.partition(" ")
        if relative and size.isdigit():
            listed[relative] = (digest, int(size))
    for folder, directories, files in os.walk(root):
        for name in directories:
            if (Path(folder) / name).is_symlink():
                return "a symbolic link the sample generator did not write"
        for name in files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if relative == SAMPLE_MARKER:
                continue
            if path.is_symlink() or relative not in listed:
                return f"a file not listed in {SAMPLE_MARKER}"
            digest, size = listed[relative]
            if path.stat().st_size != size or file_sha256(path) != digest:
                return f"a file whose hash differs from the one in {SAMPLE_MARKER}"
    return None


def is_bundled_sample(root: str | Path) -> bool:
    """Is `root` a bundled sample source (made-up identifiers), rather than real data?"""
    return not_a_sample(root) is None


def salt_for_source(root: str | Path) -> str:
    """The salt of every pseudonym of the source at `root`.

    `HEALTHGPT_DEID_SALT` when set (at least `MIN_SALT_CHARS` characters); else the public
    salt for a bundled sample (a marker whose hashes match every file); else the
    installation's private salt file, created (0600) with a warning the first time. A marker
    that does not match is warned about: it is not enough to make data public.
    """
    configured = settings().deid_salt
    if configured:
        if len(configured.strip()) < MIN_SALT_CHARS:
            raise SaltError(
                f"{SALT_ENV} is {len(configured.strip())} characters long; a salt needs at "
                f"least {MIN_SALT_CHARS} (e.g. `python -c 'import secrets; "
                f"print(secrets.token_hex(32))'`)"
            )
        if configured == PUBLIC_SAMPLE_SALT and not is_bundled_sample(root):
            log.warning(
                "%s is the public sample salt: pseudonyms of %s are reversible", SALT_ENV, root
            )
        return configured
    reason = not_a_sample(root)
    if reason is None:
        return PUBLIC_SAMPLE_SALT
    if (Path(root) / SAMPLE_MARKER).exists():
        log.warning(
            "%s holds %s but is not a bundled sample (%s): its pseudonyms use this "
            "installation's private salt",
            root,
            SAMPLE_MARKER,
            reason,
        )
    return installation_salt()


def warn_if_public(root: str | Path, salt: str) -> None:
    """A salt chosen by hand that is the public one, for real data: say so loudly."""
    if salt == PUBLIC_SAMPLE_SALT and not is_bundled_sample(root):
        log.warning("the public sample salt is used for %s: its pseudonyms are reversible", root)


def installation_salt(path: Path | None = None) -> str:
    """The private salt of this installation, generated once into `path` (mode 0600).

    Two processes racing to create it agree on one salt: each writes a private temporary
    file and links it into place, and the loser reads the winner's. A file others can read
    is refused: anyone who can read it can reverse the pseudonyms of short identifiers.
    """
    path = Path(path or paths.deid_salt_file())
    if not path.is_file():
        _create_salt_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"de-identification salt file {path} is readable by others (mode {mode:o}); "
            f"run `chmod 600 {path}`"
        )
    salt = path.read_text(encoding="ascii", errors="replace").strip()
    if len(salt) < 32:
        raise SaltError(
            f"de-identification salt file {path} holds no usable salt ({len(salt)} characters, "
            f"at least 32 needed): delete it to generate a new one only if no pseudonym made "
            f"with it must stay linkable, else restore it from backup"
        )
    return salt


def _create_salt_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return
    finally:
        temporary.unlink(missing_ok=True)
    log.warning(
        "\n%s\nNo %s is set: generated this installation's private de-identification salt in\n"
        "  %s  (mode 0600).\nEvery pseudonym of real data depends on it: back it up, keep it "
        "private, and use the same\nfile (or set %s) wherever the same sources are ingested "
        "again.\n%s",
        "!" * 78,
        SALT_ENV,
        path,
        SALT_ENV,
        "!" * 78,
    )


# ------------------------------------------------------------------ burned-in pixel text
#
# DICOM PS3.15 Annex E, Clean Pixel Data option: text burned into pixels (names, ids, birth
# dates, the institution) is not in any header, so a header allow list cannot stop it. The
# rules below name the images known to carry it: by class (ultrasound, secondary capture,
# screen captures, endoscopy and documents), and by device, after the graylist of pydicom's
# `deid` project (deid/data/deid.dicom, itself after RSNA CTP's DicomPixelAnonymizer) where a
# model is known to write a text banner. Matching files are quarantined with the rule's
# name unless the user says the pixels were reviewed (`ReaderOptions.burned_in_reviewed`).
# BurnedInAnnotation YES is refused even then: the file itself says text is there.


@dataclass(frozen=True)
class BurnedInRule:
    """Images matching every given condition may show burned-in text.

    `modalities`, `sop_classes`: header value is one of these. `sop_prefix`: SOPClassUID
    starts with it (a whole family of classes). `image_type`: one of these tokens is in
    ImageType; `image_type_all`: all of them are. `manufacturer`, `model`: words starting
    Manufacturer's or ManufacturerModelName's words (case-insensitive). Conditions left
    empty always hold. Values are compared after `normalised`.
    """

    name: str
    modalities: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    image_type: frozenset[str] = frozenset()
    manufacturer: str = ""
    model: str = ""
    sop_prefix: str = ""
    image_type_all: frozenset[str] = frozenset()

    def matches(self, header: Mapping[str, object]) -> bool:
        image_type = image_type_tokens(header)
        sop_class = _text(header, "SOPClassUID").replace(" ", "")
        maker = _text(header, "Manufacturer").lower()
        model = _text(header, "ManufacturerModelName").lower()
        return (
            (not self.modalities or _text(header, "Modality") in self.modalities)
            and (not self.sop_classes or sop_class in self.sop_classes)
            and (not self.sop_prefix or sop_class.startswith(self.sop_prefix))
            and (not self.image_type or bool(self.image_type & image_type))
            and self.image_type_all <= image_type
            and (not self.manufacturer or _word_in(self.manufacturer, maker))
            and (not self.model or _word_in(self.model, model))
        )


def normalised(value: object) -> str:
    """A header value as compared by the rules: bytes decoded, NULs dropped, whitespace
    collapsed, upper case ("US\\0" is US, "screen  save " is SCREEN SAVE)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return " ".join(str(value if value is not None else "").replace("\0", " ").split()).upper()


def image_type_tokens(header: Mapping[str, object]) -> set[str]:
    """ImageType's values, normalised; a raw backslash-joined string is split too."""
    tokens = set()
    for value in _values(header.get("ImageType")):
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        tokens |= {normalised(part) for part in text.split("\\")}
    return tokens - {""}


def _word_in(words: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(words.lower())}", text) is not None


def _text(header: Mapping[str, object], keyword: str) -> str:
    return normalised(header.get(keyword) or "")


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    return list(value) if isinstance(value, Iterable) else [value]


_SC = "1.2.840.10008.5.1.4.1.1.7"
_CT, _PT, _NM, _US = (frozenset({m}) for m in ("CT", "PT", "NM", "US"))
BURNED_IN_RULES: tuple[BurnedInRule, ...] = (
    # by class (PS3.15 E.1.1: these routinely carry annotations in the pixels)
    BurnedInRule("ultrasound modality", modalities=frozenset({"US", "IVUS"})),
    BurnedInRule(
        "ultrasound SOP class",
        sop_classes=frozenset(
            {
                "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
                "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
                "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
                "1.2.840.10008.5.1.4.1.1.6.3",  # Photoacoustic Image
                "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image (retired)
                "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
            }
        ),
    ),
    BurnedInRule(
        "secondary capture SOP class",
        sop_classes=frozenset({_SC, *(f"{_SC}.{n}" for n in range(1, 5))}),
    ),
    BurnedInRule(
        "screen capture or document modality", modalities=frozenset({"OT", "DOC", "SC", "XC"})
    ),
    BurnedInRule(
        "screen capture image type",
        image_type=frozenset({"SCREEN SAVE", "SCREENSHOT", "DOSE INFO", "DOSE_INFO", "REPORT"}),
    ),
    BurnedInRule(
        # VL Endoscopic, Microscopic, Photographic, Ophthalmic photography, Whole Slide...:
        # photographs of a scene that may hold a wristband, a label or a printed sheet.
        "visible light SOP class family",
        sop_prefix="1.2.840.10008.5.1.4.1.1.77.",
    ),
    BurnedInRule(
        "visible light photography modality", modalities=frozenset({"ES", "GM", "OP", "SM"})
    ),
    BurnedInRule("slide label or overview image", image_type=frozenset({"LABEL", "OVERVIEW"})),
    BurnedInRule(
        # PS3.15 E.3.1 (Clean Pixel Data): projection radiographs often carry the patient's
        # name or a marker banner in the pixels; only an explicit BurnedInAnnotation NO
        # (see _LIFTED_BY_NO) lets them through unreviewed. Same for derived secondary images.
        "projection radiography without BurnedInAnnotation NO",
        modalities=frozenset({"CR", "DX", "XA", "RF"}),
    ),
    BurnedInRule(
        "derived secondary image (a capture of a screen)",
        modalities=frozenset({"CT", "MR", "PT"}),
        image_type_all=frozenset({"DERIVED", "SECONDARY"}),
    ),
    BurnedInRule(
        "encapsulated document SOP class",
        sop_classes=frozenset(
            {
                "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
                "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
            }
        ),
    ),
    # by device (deid's graylist: models known to write a text banner or a dose sheet)
    BurnedInRule(
        "GE LightSpeed VCT (deid graylist)", _CT, manufacturer="GE", model="LightSpeed VCT"
    ),
    BurnedInRule(
        "Siemens SOMATOM Definition AS+ (deid graylist)", _CT, model="SOMATOM Definition AS+"
    ),
    BurnedInRule(
        "GE CT dose sheet (deid graylist)",
        _CT,
        image_type=frozenset({"SECONDARY"}),
        manufacturer="GE",
    ),
    BurnedInRule(
        "Siemens CT dose series (deid graylist)",
        _CT,
        image_type=frozenset({"SECONDARY"}),
        manufacturer="SIEMENS",
    ),
    BurnedInRule(
        "Philips CT dose series (deid graylist)",
        _CT,
        image_type=frozenset({"DOSE"}),
        manufacturer="PHILIPS",
    ),
    BurnedInRule(
        "Toshiba Aquilion ONE dose series (deid graylist)",
        _CT,
        image_type=frozenset({"SECONDARY"}),
        model="Aquilion ONE",
    ),
    BurnedInRule("Vital Images VITREA worksheet (deid graylist)", manufacturer="VITREA"),
    BurnedInRule("Philips GEMINI PET (deid graylist)", _PT, manufacturer="Philips", model="GEMINI"),
    BurnedInRule(
        "Siemens NM secondary (deid graylist)",
        _NM,
        image_type=frozenset({"SECONDARY"}),
        manufacturer="Siemens",
    ),
    BurnedInRule("ADAC nuclear medicine (deid graylist)", manufacturer="ADAC"),
    BurnedInRule("MEDRAD injection profile (deid graylist)", manufacturer="MEDRAD"),
    BurnedInRule("Canon CXDI detector (deid graylist)", model="CXDI"),
)
"""Compact rule table; the class rules already cover every ultrasound device of the graylist."""
_LIFTED_BY_NO = frozenset(
    {
        "projection radiography without BurnedInAnnotation NO",
        "derived secondary image (a capture of a screen)",
    }
)
"""Rules that guess from a common risk, so the file's own BurnedInAnnotation NO lifts them;
the other rules name classes and devices that show text whatever the header claims."""


def burned_in_rule(header: Mapping[str, object], reviewed: bool = False) -> str | None:
    """The name of the first rule saying these pixels may show text, or None.

    `header` maps DICOM keywords to values (a pydicom Dataset will do). `reviewed`: the
    user has checked or cleaned the pixels of the rule-listed classes; it does not lift
    BurnedInAnnotation YES. BurnedInAnnotation NO lifts only the `_LIFTED_BY_NO` rules.
    """
    declared = _text(header, "BurnedInAnnotation")
    if declared == "YES":
        return "BurnedInAnnotation YES"
    if reviewed:
        return None
    for rule in BURNED_IN_RULES:
        if declared == "NO" and rule.name in _LIFTED_BY_NO:
            continue
        if rule.matches(header):
            return rule.name
    return None


# ----------------------------------------------------- allow-listed values, by vocabulary
#
# An allow-listed attribute is technical, but its value is whatever the writer put there:
# BodyPartExamined "SMITH JOHN" is a name. Values leave only when they are in the
# attribute's vocabulary (DICOM PS3.3 defined terms, PS3.16 CID 4031 for body parts, the
# PS3.5 UID syntax); anything else becomes UNKNOWN.

UNKNOWN = "unknown"

_BODY_PART_TERMS = """
    ABDOMEN ABDOMENPELVIS ACJOINT ADRENAL AMNIOTICFLUID ANKLE AORTA ARM AXILLA BACK BILEDUCT
    BLADDER BRAIN BRAINSTEM BREAST BRONCHUS BUTTOCK CALCANEUS CALF CAROTID CEREBELLUM CERVIX
    CHEEK CHEST CHESTABDOMEN CHESTABDPELVIS CIRCLEOFWILLIS CLAVICLE COCCYX COLON CORNEA
    CORONARYARTERY CSPINE CTSPINE DUODENUM EAR ELBOW ESOPHAGUS EXTREMITY EYE EYELID FACE
    FEMUR FINGER FOOT FOREARM GALLBLADDER HAND HEAD HEADNECK HEART HIP HUMERUS ILEUM ILIUM
    IAC JAW JEJUNUM KIDNEY KNEE LARYNX LEG LIVER LSPINE LSSPINE LUNG MAXILLA MEDIASTINUM
    MOUTH NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE ORBIT OVARY PANCREAS PAROTID
    PATELLA PELVIS PENIS PHARYNX PROSTATE RADIUS RECTUM RIB SACRUM SCAPULA SCROTUM SHOULDER
    SKULL SPINE SPLEEN SSPINE STERNUM STOMACH SUBCLAVIAN TESTIS THIGH THORAX THUMB THYMUS
    THYROID TIBIA TOE TONGUE TRACHEA TSPINE TLSPINE ULNA URETER URETHRA UTERUS VAGINA
    VULVA WHOLEBODY WRIST ZYGOMA
    """
BODY_PARTS = frozenset(_BODY_PART_TERMS.split()) | {
    "WHOLE BODY", "HEAD NECK", "ABDOMEN PELVIS", "CHEST ABDOMEN", "C SPINE", "L SPINE",
    "T SPINE", "EXTREMITIES", "ABD", "SINUS", "SINUSES", "CARDIAC", "LUNGS",
}  # fmt: skip
"""BodyPartExamined defined terms (PS3.16 CID 4031, plus the spellings scanners use)."""

PHOTOMETRIC_INTERPRETATIONS = frozenset(
    {
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
        "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK",
        "XYB",
    }
)  # fmt: skip

VIEW_POSITIONS = frozenset(
    {
        "AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LAT", "LATERAL", "LAO", "RAO",
        "AP AXIAL", "PA AXIAL", "OBLIQUE", "CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM",
        "FB", "SIO", "ISO", "AT", "CV",
    }
)  # fmt: skip
"""ViewPosition defined terms (PS3.3 C.8.11.5 projections and the mammography views)."""

IMAGE_TYPE_TERMS = frozenset(
    {
        "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "AXIAL", "CORONAL", "SAGITTAL",
        "OBLIQUE", "LOCALIZER", "REFORMATTED", "PROJECTION IMAGE", "OTHER", "NONE", "MIXED",
        "MPR", "MIP", "MINIP", "VOLREN", "CURVED", "DRR", "DOSE", "T1", "T2", "PD", "FLAIR",
        "DIFFUSION", "ADC", "TRACEW", "FA", "M", "P", "R", "I", "MAGNITUDE", "PHASE", "REAL",
        "IMAGINARY", "NORM", "ND", "DIS2D", "DIS3D", "FM", "FIL", "MOSAIC", "NORMAL",
        "WHOLE BODY", "EMISSION", "TRANSMISSION", "STATIC", "DYNAMIC", "GATED", "TOMO",
        "RECON TOMO", "GATED TOMO", "RECON GATED TOMO", "CARDIOLOGY", "ABDOMINAL", "TEE",
        "TTE", "VASCULAR", "OBSTETRICAL", "GYNECOLOGY", "BREAST", "SMALL PARTS", "SE", "IR",
        "GR", "EP", "RM", "SCREEN SAVE", "DOSE INFO", "SUBTRACTION", "BIPLANE A",
        "BIPLANE B", "SINGLE PLANE", "CINE", "FLUOROSCOPY", "POST_CONTRAST", "PRE_CONTRAST",
        "CT_SOM5 SPI", "CSA MPR", "CSAPARALLEL", "HELIX", "VOLUME", "FIRST PASS",
        "REST", "STRESS",
    }
)  # fmt: skip
"""ImageType values (PS3.3 C.7.6.1.1.2 and the modality-specific defined terms), plus the
implementation-specific tokens common scanners write (Siemens CSA, SOMATOM)."""

_MODALITY_CODES = """
    AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO
    IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN
    POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN
    RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC
    CD DD DF DM DS EC FA FS LP MA MS OPR ST VF
    """
MODALITIES = frozenset(_MODALITY_CODES.split())
"""Modality defined terms (PS3.3 C.7.3.1.1.1, current and retired)."""

SCANNING_SEQUENCES = frozenset({"SE", "IR", "GR", "EP", "RM"})
MR_ACQUISITION_TYPES = frozenset({"2D", "3D"})
_ORIENTATION = re.compile(r"^[APLRHF]{1,3}$")
_UID = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$")

VOCABULARIES: dict[str, frozenset[str]] = {
    "Modality": MODALITIES,
    "BodyPartExamined": BODY_PARTS,
    "PhotometricInterpretation": PHOTOMETRIC_INTERPRETATIONS,
    "ViewPosition": VIEW_POSITIONS,
    "ImageType": IMAGE_TYPE_TERMS,
    "ScanningSequence": SCANNING_SEQUENCES,
    "MRAcquisitionType": MR_ACQUISITION_TYPES,
}


def is_uid(value: object) -> bool:
    """PS3.5 9.1 UID syntax: dot-separated decimal components without leading zeros, at
    most 64 characters."""
    text = str(value or "")
    return 0 < len(text) <= 64 and bool(_UID.match(text))


def vocabulary_value(keyword: str, value: object) -> str | None:
    """`value` as the attribute's defined term (upper case), UNKNOWN when it is not one, or
    None when empty. Only for the attributes of `VOCABULARIES` and PatientOrientation."""
    text = " ".join(str(value or "").split()).upper()
    if not text:
        return None
    if keyword == "PatientOrientation":
        return text if _ORIENTATION.match(text) else UNKNOWN
    return text if text in VOCABULARIES[keyword] else UNKNOWN


# ------------------------------------------------------------------------ report free text
#
# A documented pattern set for radiology report text (MIMIC-CXR is already de-identified by
# its publisher with `___` placeholders; these catch what a local or re-identified export
# still holds). Every match becomes `___`, MIMIC's own placeholder, which is kept as is.
# Patterns run in order; each is named so the README and the tests can refer to them.

REDACTED = "___"
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_ORDINAL = (
    r"(?:(?:(?:twenty|thirty)[\s\-]?)?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|"
    r"ninth)|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|"
    r"eighteenth|nineteenth|twentieth|thirtieth)"
)
"""A day of the month in words (one alternation per stem keeps the scan cheap)."""
_TITLE = r"(?:dr|doctor|mr|mrs|ms|miss|mx|prof|professor|sr|sister|nurse)"
_NAME = r"(?<![A-Za-z'\-])(?-i:[A-Z][A-Za-z'\-]+|[A-Z]\.?)"
_PARTICLE = r"(?-i:van|von|der|den|de|del|della|di|da|la|le|du|dos|ter|ten)"
_NAME_SPAN = rf"(?:(?:{_PARTICLE}|{_NAME})\s{{1,3}}){{0,3}}{_NAME}\b"
"""A name of up to four words, particles (van, der, de, la, von) included."""
_STREET = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"square|sq|parkway|pkwy|highway|hwy|terrace)"
)


def _digit_run(match: re.Match[str]) -> str:
    """A token (letters, digits, hyphens) holding five digits or more is an identifier."""
    token = match.group(0)
    return REDACTED if sum(c.isdigit() for c in token) >= 5 else token


# Linear by construction: a pattern starts only where its token starts (a look-behind on the
# token's own class), whitespace runs are bounded ({0,3}), and no quantified group repeats a
# class that overlaps what follows it, so no match attempt re-reads more than one token.
SCRUB_PATTERNS: tuple[tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    tuple(
        (name, re.compile(pattern, re.IGNORECASE), replacement)
        for name, pattern, replacement in (
            ("email", r"(?<![\w.+\-])[\w.+\-]++@[\w\-]++(?:\.[\w\-]++)+", REDACTED),
            ("url", r"\b(?:https?://|www\.)\S+", REDACTED),
            (
                "phone",
                r"(?<![\w/+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b"
                r"|(?<![\w/.])\d{3}-\d{4}\b"
                r"|\b(?:pager|beeper|phone|tel|telephone|ext|extension|x)\.?\s{0,3}#?:?\s{0,3}"
                r"\d[\d\-]{2,}",
                REDACTED,
            ),
            (
                "international phone",
                r"(?<![\w+])\+\d{1,3}(?:[\s.\-]\(?\d{1,4}\)?){2,5}(?!\w)",
                REDACTED,
            ),
            ("date iso", r"\b\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}\b", REDACTED),
            ("date numeric", r"\b\d{1,2}[\-/.]\d{1,2}[\-/.](?:\d{4}|\d{2})\b", REDACTED),
            (
                "date day-month-year",
                rf"\b\d{{1,2}}[\-/ .]?{_MONTH}[\-/ .]?(?:\d{{4}}|\d{{2}})\b",
                REDACTED,
            ),
            (
                "date with month name",
                rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s{{1,3}}(?:of\s{{1,3}})?{_MONTH}\.?,?(?:\s{{1,3}}\d{{4}})?"
                rf"|{_MONTH}\.?\s{{1,3}}\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s{{1,3}}\d{{4}})?"
                rf"|{_MONTH}\.?,?\s{{1,3}}\d{{4}})\b",
                REDACTED,
            ),
            (
                "date in words",
                rf"\b(?:(?:the\s{{1,3}})?{_ORDINAL}\s{{1,3}}(?:of\s{{1,3}})?{_MONTH}"
                rf"|{_MONTH}\s{{1,3}}(?:the\s{{1,3}})?{_ORDINAL})\b(?:,?\s{{1,3}}\d{{4}}\b)?",
                REDACTED,
            ),
            ("month and day", r"(?<![\w.])\d{1,2}/\d{1,2}(?![\w/])", REDACTED),
            (
                "time",
                r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s{0,3}(?:[ap]\.?m\b\.?))?|\b\d{1,2}\s{0,3}[ap]\.?m\b\.?",
                REDACTED,
            ),
            (
                "labelled id",
                r"\b(?P<label>mrn|mr#|medical record(?: number)?|acc(?:ession)?(?: number| no\.?)?|"
                r"unit (?:no|number)|patient id|pt id|ssn|id)\s{0,3}(?:#|:|no\.?)?\s{0,3}"
                r"(?-i:(?!___)[A-Z0-9][A-Z0-9\-]*+(?<=\d)|[A-Z0-9][A-Z0-9\-]*?\d[A-Z0-9\-]*+)",
                r"\g<label> ___",
            ),
            ("long digit run", r"(?<![\w.])[A-Za-z0-9\-]++", _digit_run),
            (
                "street address",
                rf"\b\d{{1,5}}[A-Za-z]?\s{{1,3}}(?:{_NAME}\s{{1,3}}){{1,3}}{_STREET}\b\.?"
                rf"(?:,?\s{{1,3}}(?:apt|suite|unit)\.?\s{{0,3}}\w+)?",
                REDACTED,
            ),
            (
                "age over 89",
                r"\b(?:9\d|1[0-9]\d)(?!\+)(?=\s{0,3}-?\s{0,3}(?:years?|yrs?|y/?o|y\.o\.)\b)",
                "90+",
            ),
            (
                "age over 89, labelled",
                r"\b(?P<l>age[ds]?:?\s{0,3})(?:9\d|1[0-9]\d)\b(?!\+)",
                r"\g<l>90+",
            ),
            (
                "name after title",
                rf"\b(?P<title>{_TITLE})(?P<dot>\.?)\s{{1,3}}(?!___){_NAME_SPAN}",
                r"\g<title>\g<dot> ___",
            ),
            (
                "lower-case name after title",
                r"\b(?P<title>dr\.?|doctor|mr\.|mrs\.|ms\.|miss|prof\.)\s{1,3}(?!___)"
                r"(?-i:[a-z][a-z'\-]+)\b",
                r"\g<title> ___",
            ),
            (
                "name before credential",
                rf"{_NAME}(?:\s{{1,3}}{_NAME}){{0,2}},?\s{{1,3}}(?-i:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PhD)\b\.?",
                REDACTED,
            ),
        )
    )
)
"""(name, pattern, replacement) in the order applied by `scrub_text`; `scrub_text` also
replaces the names after role words and in sentences about who was told (below)."""

# Sentences recording who was told, who read or signed: removed when they name a person
# ("discussed with ...", "signed by ..."), else their name-like words become ___.
_TOLD = re.compile(
    r"\b(?:discussed|communicated|conveyed|telephoned|called|paged|notified|informed|"
    r"(?:read|signed|dictated|reviewed|seen|verified|approved)\s{1,3}by)\b",
    re.IGNORECASE,
)
_TOLD_WHOM = re.compile(r"\b(?:with|to|by)\b", re.IGNORECASE)
_ROLE = (
    r"(?:attending|resident|fellow|radiologist|physician|surgeon|technologist|clinician|"
    r"intern|housestaff|provider|nurse practitioner|pcp|referring|ordering|signed|cc)"
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_NAME_WORD = r"(?:(?-i:[A-Z]\.)|[A-Za-z][A-Za-z'\-]*,?)"  # an initial, or a word
_NAME_WORDS = rf"{_NAME_WORD}(?:\s{{1,3}}{_NAME_WORD}){{0,3}}"
_AFTER_ROLE = re.compile(
    rf"\b(?P<role>{_ROLE}|patient|pt)\b(?P<gap>[.:,]?\s{{1,3}}(?:(?:dr|doctor)\.?\s{{1,3}})?)"
    rf"(?P<words>{_NAME_WORDS})",
    re.IGNORECASE,
)
_COMMON_TERMS = """
    a about above after again against all also an and any are as at be been before being
    below between both but by can cc could did do does done during each either for from
    further had has have having he her here hers him his how i if in into is it its itself
    just may me might more most my no nor not now of off on once only or other our out over
    own per same she should so some such than that the their them then there these they
    this those through to too under until up upon very via was we were what when where
    which while who whom why will with would yes you your
    today yesterday tonight morning afternoon evening night time date day days week weeks
    am pm hours hour minutes
    attending resident residents fellow radiologist radiology physician physicians surgeon
    surgery surgical technologist clinician clinicians intern housestaff provider
    practitioner nurse nursing team service staff covering referring ordering primary
    pcp care doctor dr md patient patients pt family wife husband son daughter
    findings finding result results impression report reports study studies exam
    examination images image recommendation recommendations preliminary final critical
    urgent wet read reading notified informed discussed communicated called paged
    telephoned conveyed signed dictated reviewed seen verified approved electronically
    phone telephone person bedside directly verbally
    chest heart lung lungs pleural effusion pneumothorax consolidation ct cta mri mr us
    pet xr cxr er ed icu micu sicu ccu ccu nicu picu or pacu ir rn np
    status post denies has had is was reports presents underwent with without
    left right bilateral new old no normal abnormal acute chronic stable unchanged
    dob mrn ssn id unit accession age sex male female man woman history hx
    """
_COMMON = frozenset(_COMMON_TERMS.split())
"""Words that are never taken for a name after a role word or in a 'who was told' sentence."""

_NOTIFICATION = re.compile(r"\bNOTIFICATION\s{0,3}:.*", re.IGNORECASE | re.DOTALL)
_TITLE_DOT = re.compile(rf"\b({_TITLE})\.", re.IGNORECASE)
_HELD_DOT = "\x00"
_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def _is_name_word(word: str, capitalised_only: bool) -> bool:
    if re.fullmatch(r"[A-Z]\.,?", word):  # an initial
        return True
    word = word.strip(".,")
    if word.lower() in _COMMON or word == REDACTED:
        return False
    return word[0].isupper() or not capitalised_only


def _names_after_role(match: re.Match[str]) -> str:
    """'attending john smith', 'Patient John A. Smith': the name words after the role become
    ___ (only capitalised ones after 'patient', whose clinical text follows in lower case)."""
    capitalised_only = match["role"].lower() in {"patient", "pt"}
    words = match["words"].split()
    names = 0
    while names < len(words) and _is_name_word(words[names], capitalised_only):
        names += 1
    if not names:
        return match.group(0)
    rest = " ".join(words[names:])
    return f"{match['role']}{match['gap']}{REDACTED}" + (f" {rest}" if rest else "")


def _told(sentence: str) -> str | None:
    """A sentence about who was told or who read: None (dropped) when it names the person
    after with/to/by, else the sentence with its name-like words replaced."""
    told = _TOLD.search(sentence)
    if told is None:
        return sentence
    if _TOLD_WHOM.search(sentence, told.start()):
        return None
    return _WORD.sub(
        lambda m: REDACTED if _is_name_word(m.group(0), capitalised_only=True) else m.group(0),
        sentence,
    )


def scrub_text(text: str) -> str:
    """Report text with every `SCRUB_PATTERNS` match replaced, names after role words
    replaced, and the sentences that record who was told of a finding or who read or
    signed the report (a NOTIFICATION, "discussed with Dr. ... at ...") removed or their
    names replaced. Every step is linear in the length of the text; callers still check
    `max_text_chars` first."""
    text = _NOTIFICATION.sub("", text.replace(_HELD_DOT, ""))
    held = _TITLE_DOT.sub(rf"\1{_HELD_DOT}", text)  # "Dr." does not end a sentence
    sentences = [kept for s in _SENTENCE_END.split(held) if (kept := _told(s)) is not None]
    text = " ".join(sentences).replace(_HELD_DOT, ".")
    for _, pattern, replacement in SCRUB_PATTERNS:
        text = pattern.sub(replacement, text)
    text = _AFTER_ROLE.sub(_names_after_role, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()
