"""SLAKE 1.0 in miniature: imgs/xmlab<N>/source.jpg and train/validation/test JSON, with
English and Chinese questions that are true by the images' DICOM headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthgpt.data.samples import catalog
from healthgpt.data.samples.catalog import CatalogImage
from healthgpt.data.samples.questions import image_questions
from healthgpt.data.samples.seal import sealed

# xmlab index -> (catalog image, SLAKE location label, split file)
IMAGES = (
    ("ct_head", "Brain", "train"),
    ("mr_head", "Brain", "train"),
    ("cr_chest_pa", "Lung", "train"),
    ("ct_pancreas", "Abdomen", "train"),
    ("mr_abdomen", "Abdomen", "validation"),
    ("ct_neck", "Neck", "test"),
)
SPLIT_FILES = {"train": "train.json", "validation": "validation.json", "test": "test.json"}
_SLAKE_MODALITY = {"CT": "CT", "MRI": "MRI", "X-Ray": "X-Ray"}
_CONTENT = {
    "MODALITY": "Modality",
    "ORGAN": "Organ",
    "COLOR": "Color",
    "COUNT": "Quantity",
    "PLANE": "Plane",
}
_ZH_MODALITY = {"CT": "CT", "MRI": "MRI", "X-Ray": "X光"}
_ZH_PART = {"head": "头部", "chest": "胸部", "abdomen": "腹部", "neck": "颈部"}


def _answer(value: str | int) -> str | int:
    """SLAKE capitalizes its answers ("Yes", "CT", "Brain"); counts stay numbers."""
    if isinstance(value, int):
        return value
    return {"ct": "CT", "mri": "MRI", "x-ray": "X-Ray"}.get(value, value.capitalize())


def _english(image: CatalogImage) -> list[dict[str, Any]]:
    return [
        {
            "question": qa.question,
            "answer": _answer(qa.answer),
            "q_lang": "en",
            "answer_type": "CLOSED" if qa.closed else "OPEN",
            "content_type": _CONTENT.get(qa.kind, "Abnormality"),
        }
        for qa in image_questions(image)
    ]


def _chinese(image: CatalogImage) -> list[dict[str, Any]]:
    rows = [
        {"question": "这张图片的成像方式是什么?", "answer": _ZH_MODALITY[image.modality]},
        {"question": "这张图片是彩色的吗?", "answer": "是" if image.is_color else "否"},
    ]
    if image.body_part in _ZH_PART:
        rows.append(
            {"question": "图中显示的是身体的哪个部位?", "answer": _ZH_PART[image.body_part]}
        )
    return [
        {**row, "q_lang": "zh", "answer_type": "OPEN", "content_type": "Modality"} for row in rows
    ]


@sealed
def build(dest: Path) -> None:
    dest = Path(dest)
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLIT_FILES}
    qid = 0
    for img_id, (name, location, split) in enumerate(IMAGES):
        image = catalog.get(name)
        catalog.write_jpeg(image, dest / "imgs" / f"xmlab{img_id}" / "source.jpg")
        for row in _english(image) + _chinese(image):
            by_split[split].append(
                {
                    "img_id": img_id,
                    "img_name": f"xmlab{img_id}/source.jpg",
                    "modality": _SLAKE_MODALITY[image.modality],
                    "location": location,
                    "base_type": "vqa",
                    "qid": qid,
                    **row,
                }
            )
            qid += 1
    # Bad inputs: a missing image folder, a zero-byte JPEG, a truncated JPEG.
    catalog.write_empty_jpeg(dest / "imgs" / "xmlab91" / "source.jpg")
    catalog.write_truncated_jpeg(catalog.get("ct_head"), dest / "imgs" / "xmlab92" / "source.jpg")
    for img_id in (90, 91, 92):
        by_split["train"].append(
            {
                "img_id": img_id,
                "img_name": f"xmlab{img_id}/source.jpg",
                "question": "What modality is used to take this image?",
                "answer": "CT",
                "q_lang": "en",
                "modality": "CT",
                "location": "Brain",
                "answer_type": "OPEN",
                "content_type": "Modality",
                "base_type": "vqa",
                "qid": qid,
            }
        )
        qid += 1
    for split, file_name in SPLIT_FILES.items():
        catalog.write_json(dest / file_name, by_split[split])
    catalog.write_readme(
        dest,
        "SLAKE sample (healthgpt)",
        real=[
            "the images: real DICOM test images of pydicom / pydicom-data rendered by "
            "healthgpt.data.decode.dicom, saved as imgs/xmlab<N>/source.jpg (longer side <= 512):",
            *[
                f"xmlab{i}: {catalog.provenance(catalog.get(n))}"
                for i, (n, _, _) in enumerate(IMAGES)
            ],
            "the answers, English and Chinese: stated by each image's DICOM header",
            "the layout and field names of Slake1.0",
        ],
        made_up=[
            "qids, img_ids, question wording, the split assignment, the location labels "
            "(chosen to agree with BodyPartExamined)",
            "no mask.png / detection.json (the reader does not use them)",
            "bad inputs in train.json: xmlab90 is missing, xmlab91/source.jpg is empty, "
            "xmlab92/source.jpg is truncated; their rows must be quarantined",
        ],
    )
