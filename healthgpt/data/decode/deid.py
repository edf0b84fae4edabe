"""De-identification: what counts as PHI, and how identifiers become pseudonyms.

Readers never copy a header string into a record unless it is on the allow list below; this
is safer than scrubbing a deny list, because a DICOM export can carry PHI in any private or
free-text tag. The deny list (`PHI_KEYWORDS`, after DICOM PS3.15 Annex E, Basic Application
Level Confidentiality Profile) documents what must never be allow-listed; a test keeps
the two lists disjoint.
"""

from __future__ import annotations

import hashlib
import hmac
import re

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


def pseudonym(value: str, salt: str, prefix: str = "anon") -> str:
    """A salted, keyed hash of an identifier: stable for one salt, unlinkable without it."""
    digest = hmac.new(salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()[:16]
    return f"{prefix}-{digest}"


_DIGITS = re.compile(r"\d{6,}")


def redact_long_numbers(text: str) -> str:
    """Replace runs of six or more digits (MRNs, accession numbers, dates) in free text."""
    return _DIGITS.sub("___", text)
