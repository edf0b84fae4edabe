"""Normalization of the labels sources use onto the schema's closed vocabularies, and of the
free-text labels some sources need beyond them (body parts, split names, modality words
inside questions and answers)."""

from __future__ import annotations

import re

from healthgpt.data.schema import MODALITIES
from healthgpt.data.tasks import OPTION_LETTERS as OPTION_LETTERS

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


# ---------------------------------------------------------------------------------- labels

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def normalize_split(label: object, default: str = "train") -> str:
    """Publisher split names (val, validate, dev, ...) onto train / validation / test."""
    key = str(label or "").strip().lower()
    if not key:
        return default
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split name {label!r}")
    return _SPLIT_ALIASES[key]


# Coarse body regions, first match wins: organ words map to the region they sit in so that
# "Chest_lungs", "Lung", "CHEST" and "thorax" all become "chest".
_BODY_REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("whole body", ("whole body", "wholebody")),
    ("head", ("head", "brain", "skull", "face", "orbit", "sinus", "cerebr")),
    ("neck", ("neck", "thyroid", "cervical")),
    ("chest", ("chest", "lung", "thorax", "heart", "cardiac", "mediastin", "pulmon", "rib")),
    (
        "abdomen",
        ("abd", "liver", "kidney", "renal", "pancrea", "spleen", "bowel", "colon", "stomach"),
    ),
    ("pelvis", ("pelvi", "bladder", "prostate", "uterus", "hip")),
    ("spine", ("spine", "spinal", "vertebr")),
    ("extremity", ("extremit", "hand", "foot", "knee", "shoulder", "arm", "leg", "wrist")),
)


def normalize_body_part(label: object) -> str | None:
    """A source's organ / location label as a coarse lowercase region (None when empty)."""
    text = str(label or "").strip().lower().replace("_", " ")
    if not text:
        return None
    for region, words in _BODY_REGIONS:
        if any(word in text for word in words):
            return region
    return re.sub(r"\s+", " ", text)


# Words that name a modality inside free text (questions, answers, PubMedVision labels,
# benchmark modality labels such as OmniMedVQA's "MR (Mag-netic Resonance Imaging)" or MMMU's
# "['Microscopic Images']"). One table, two readings: `modality_from_text` wants exactly one
# modality named (a question naming two says nothing); `first_modality_in` takes the first
# row that matches (a benchmark label names one modality, maybe with words of another).
MODALITY_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (modality, re.compile(pattern))
    for modality, pattern in (
        ("OCT", r"optical coherence|\boct\b"),
        ("CT", r"\bct\b|computed tomograph|\bcta\b"),
        ("MRI", r"\bmri?\b|magnetic resonance|mag-?netic|\bt1\b|\bt2\b|\bflair\b|\bdwi\b|\badc\b"),
        ("X-Ray", r"x-?ray|radiograph|plain film|\bcxr\b|mammogra|fluorosc"),
        ("Ultrasound", r"ultrasound|sonogra|echocardiog|\bus\b"),
        ("Nuclear Medicine", r"\bpet\b|nuclear|scintigra|spect\b"),
        ("Fundus", r"fundus|retina"),
        ("Dermoscopy", r"dermoscop|dermatoscop"),
        ("Microscopy", r"microscop"),
        ("Endoscopy", r"endoscop|colonoscop"),
        ("Pathology", r"patholog|histolog|histopatholog|\bh&e\b|immunohisto"),
    )
)


def _modalities_named(text: str) -> list[str]:
    key = text.lower()
    return [modality for modality, pattern in MODALITY_WORDS if pattern.search(key)]


def modality_from_text(text: object) -> str | None:
    """The single modality a piece of free text names, or None if it names none or several."""
    if not text:
        return None
    direct = normalize_modality(str(text))
    if direct != "Other":
        return direct
    found = set(_modalities_named(str(text)))
    return found.pop() if len(found) == 1 else None


def first_modality_in(label: object) -> str:
    """The first modality (in `MODALITY_WORDS` order) a label names, "Other" if none."""
    found = _modalities_named(str(label or ""))
    return found[0] if found else "Other"
