"""Questions whose answers are true by a catalog image's own header (or docstring).

The sample builders phrase these in each source's style. Nothing here looks at pixels: a
question is asked only when the image's source states the answer (Modality, BodyPartExamined,
ViewPosition, ImageType, PhotometricInterpretation, NumberOfFrames, or scikit-image's
description of the picture).
"""

from __future__ import annotations

from dataclasses import dataclass

from healthgpt.data.samples.catalog import CatalogImage

MODALITY_WORDS = {
    "CT": "ct",
    "MRI": "mri",
    "X-Ray": "x-ray",
    "Ultrasound": "ultrasound",
    "Nuclear Medicine": "nuclear medicine",
    "Fundus": "fundus photography",
    "Pathology": "histopathology",
    "Microscopy": "microscopy",
}
_IS_MODALITY = {
    "CT": "Is this a CT scan?",
    "MRI": "Is this an MRI?",
    "X-Ray": "Is this an x-ray?",
    "Ultrasound": "Is this an ultrasound image?",
}
_RADIOLOGY = ("CT", "MRI", "X-Ray", "Ultrasound")
_REGIONS = ("head", "chest", "abdomen")
# Modalities whose "body part" is an organ or tissue, asked about in `_described` instead.
_NOT_REGIONAL = ("Pathology", "Fundus", "Microscopy")


@dataclass(frozen=True)
class QA:
    """One question with its true answer; `paraphrase` asks the same thing in other words."""

    question: str
    answer: str | int
    closed: bool
    kind: str  # VQA-RAD question_type style: MODALITY, ORGAN, COLOR, PLANE, COUNT, ATTRIB
    paraphrase: str | None = None


def _other(value: str, choices: tuple[str, ...]) -> str:
    """A deterministic distractor: the next choice after `value` (or the first)."""
    if value in choices:
        return choices[(choices.index(value) + 1) % len(choices)]
    return choices[0]


def image_questions(image: CatalogImage) -> list[QA]:
    """Every question the image's facts answer, in a fixed order."""
    qas = [
        QA(
            "What imaging modality was used to acquire this image?",
            MODALITY_WORDS[image.modality],
            False,
            "MODALITY",
            "How was this image taken?",
        )
    ]
    for asked in (image.modality, _other(image.modality, _RADIOLOGY)):
        if asked in _IS_MODALITY:
            answer = "yes" if asked == image.modality else "no"
            qas.append(QA(_IS_MODALITY[asked], answer, True, "MODALITY"))
    if image.body_part and image.modality not in _NOT_REGIONAL:
        qas.append(
            QA(
                "Which part of the body is shown in this image?",
                image.body_part,
                False,
                "ORGAN",
                "What body region is imaged?",
            )
        )
        for region in dict.fromkeys((image.body_part, _other(image.body_part, _REGIONS))):
            qas.append(
                QA(
                    f"Is this an image of the {region}?",
                    "yes" if region == image.body_part else "no",
                    True,
                    "ORGAN",
                )
            )
    qas.append(
        QA(
            "Is this image in color?",
            "yes" if image.is_color else "no",
            True,
            "COLOR",
            "Is this a color image?",
        )
    )
    qas.append(QA("How many color channels does this image have?", image.channels, False, "COUNT"))
    if image.plane:
        qas.append(
            QA(
                "In which plane was this image acquired?",
                image.plane,
                False,
                "PLANE",
                "What plane is this image in?",
            )
        )
    if image.view:
        qas.append(
            QA(
                "What is the projection of this radiograph?",
                image.view.lower(),
                False,
                "PLANE",
                "Which view is this radiograph?",
            )
        )
    if int(image.facts.get("n_frames", 1)) > 1:
        qas.append(
            QA(
                "How many frames does the acquired series contain?",
                int(image.facts["n_frames"]),
                False,
                "COUNT",
            )
        )
    qas.extend(_described(image))
    return qas


def _described(image: CatalogImage) -> list[QA]:
    """Questions from scikit-image's descriptions of its pictures."""
    facts = image.facts
    qas = []
    if "stain" in facts:
        qas += [
            QA("Is this an immunohistochemistry stain?", "yes", True, "ATTRIB"),
            QA(
                "What reveals the expression of the protein?",
                facts["stain"].lower(),
                False,
                "ATTRIB",
            ),
            QA("What counterstain was applied?", facts["counterstain"], False, "ATTRIB"),
            QA(
                "The expression of which protein is shown?",
                facts["protein"].lower(),
                False,
                "ATTRIB",
            ),
            QA("From which organ was this tissue taken?", image.body_part, False, "ORGAN"),
            QA("Is this a radiograph?", "no", True, "MODALITY"),
        ]
    if "eye" in facts:
        qas.append(QA("Which eye is shown?", facts["eye"], False, "ORGAN"))
    if "lesion" in facts:
        qas.append(QA("What lesions does this retina show?", facts["lesion"], False, "ABN"))
    if "technique" in facts:
        qas.append(
            QA("What imaging technique produced this image?", facts["technique"], False, "ATTRIB")
        )
    return qas
