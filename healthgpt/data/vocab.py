"""Normalization of the labels sources use onto the schema's closed vocabularies."""

from __future__ import annotations

from healthgpt.data.schema import MODALITIES

_MODALITY_ALIASES = {
    # DICOM (0008,0060) codes
    "ct": "CT",
    "mr": "MRI",
    "mri": "MRI",
    "cr": "X-Ray",
    "dx": "X-Ray",
    "dr": "X-Ray",
    "rf": "X-Ray",
    "xa": "X-Ray",
    "mg": "X-Ray",
    "px": "X-Ray",
    "x-ray": "X-Ray",
    "xray": "X-Ray",
    "x ray": "X-Ray",
    "cxr": "X-Ray",
    "us": "Ultrasound",
    "ultrasound": "Ultrasound",
    "nm": "Nuclear Medicine",
    "pt": "Nuclear Medicine",
    "pet": "Nuclear Medicine",
    "op": "Fundus",
    "fundus": "Fundus",
    "oct": "OCT",
    "opt": "OCT",
    "sm": "Pathology",
    "pathology": "Pathology",
    "microscopy": "Microscopy",
    "es": "Endoscopy",
    "endoscopy": "Endoscopy",
    "dermoscopy": "Dermoscopy",
    "xc": "Dermoscopy",
}


def normalize_modality(label: str | None) -> str:
    """Map a source's modality label (DICOM code or free text) to the schema vocabulary."""
    if not label:
        return "Other"
    key = str(label).strip().lower()
    if key in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[key]
    for canonical in MODALITIES:
        if key == canonical.lower():
            return canonical
    if "mr" in key.split() or key.startswith("mr"):
        return "MRI"
    return "Other"


def answer_text(answer: object) -> str:
    """A source's answer as stored: always a string, numbers from JSON in their plain text
    form. Not the scoring normalization (that is `healthgpt.eval.normalize.normalize_answer`)."""
    if answer is None:
        return ""
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer).strip()


def normalize_answer_type(label: object, answer: str | None = None) -> str:
    """`closed` or `open`. Sources write CLOSED, 'closed ', 'Closed', ... ; yes/no is closed."""
    key = str(label or "").strip().lower()
    if key.startswith("close"):
        return "closed"
    if key.startswith("open"):
        return "open"
    if answer is not None and answer.strip().lower() in {"yes", "no"}:
        return "closed"
    return "open"
