"""VQA-RAD in miniature: the OSF layout, real radiology images, questions true by header.

As in the real dataset, the same image is asked about in train and test rows (free-form and
paraphrased questions), which the mixture's decontamination must catch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthgpt.data.samples import catalog
from healthgpt.data.samples.questions import image_questions
from healthgpt.data.samples.seal import sealed
from healthgpt.data.sources.vqa_rad import IMAGE_DIR, JSON_NAME

# catalog image -> VQA-RAD image_organ (the dataset's three organ systems)
IMAGES = {
    "ct_head": "HEAD",
    "mr_head": "HEAD",
    "cr_chest_pa": "CHEST",
    "ct_pancreas": "ABD",
    "mr_abdomen": "ABD",
}
# The real file's answer_type column is not clean; reproduce its variants.
_CLOSED = ("CLOSED", "CLOSED", "CLOSED ", "Closed")
_OPEN = ("OPEN", "OPEN", "OPEN", "open ")


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, (name, organ) in enumerate(IMAGES.items()):
        image_name = f"synpic{90001 + number}.jpg"
        for index, qa in enumerate(image_questions(catalog.get(name))):
            variants = _CLOSED if qa.closed else _OPEN
            base = {
                "image_name": image_name,
                "image_organ": organ,
                "answer": qa.answer,
                "answer_type": variants[(index + number) % len(variants)],
                "question_type": qa.kind,
            }
            phrase = "test_freeform" if index % 4 == 3 else "freeform"
            rows.append({**base, "question": qa.question, "phrase_type": phrase})
            if qa.paraphrase:
                phrase = "test_para" if index % 2 == 0 else "para"
                rows.append({**base, "question": qa.paraphrase, "phrase_type": phrase})
    # Bad inputs: a missing image, a zero-byte JPEG, a truncated JPEG.
    for image_name in ("synpic99990.jpg", "synpic99991.jpg", "synpic99992.jpg"):
        rows.append(
            {
                "image_name": image_name,
                "image_organ": "HEAD",
                "answer": "ct",
                "answer_type": "OPEN",
                "question_type": "MODALITY",
                "question": "What imaging modality was used to acquire this image?",
                "phrase_type": "freeform",
            }
        )
    return [{"qid": qid, **row} for qid, row in enumerate(rows, start=1)]


@sealed
def build(dest: Path) -> None:
    images = Path(dest) / IMAGE_DIR
    for number, name in enumerate(IMAGES):
        catalog.write_jpeg(catalog.get(name), images / f"synpic{90001 + number}.jpg")
    catalog.write_empty_jpeg(images / "synpic99991.jpg")
    catalog.write_truncated_jpeg(catalog.get("ct_head"), images / "synpic99992.jpg")
    catalog.write_json(Path(dest) / JSON_NAME, _rows())
    catalog.write_readme(
        Path(dest),
        "VQA-RAD sample (healthgpt)",
        real=[
            "the images: real DICOM test images of pydicom / pydicom-data, rendered by "
            "healthgpt.data.decode.dicom and saved as JPEG (longer side <= 512):",
            *[catalog.provenance(catalog.get(name)) for name in IMAGES],
            "the answers: each is stated by the image's DICOM header (Modality, "
            "BodyPartExamined, ViewPosition, ImageType, PhotometricInterpretation, "
            "NumberOfFrames)",
            "the layout and field names of VQA_RAD Dataset Public.json",
        ],
        made_up=[
            "image names (synpic9000N.jpg), qids, the question wording, the phrase_type "
            "(train/test) assignment",
            "image_organ ABD for the CT whose header says PANCREAS",
            "bad inputs: synpic99990.jpg is referenced but missing, synpic99991.jpg is empty, "
            "synpic99992.jpg is a truncated JPEG; their rows must be quarantined",
        ],
    )
