"""LLaVA-style conversation JSON in miniature: a LLaVA-Med-like `.json` and a
PubMedVision-like `.jsonl` (with modality labels and multi-image samples) over every catalog
image, with conversations whose answers are true by the images' headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from healthgpt.data.samples import catalog
from healthgpt.data.samples.catalog import CatalogImage
from healthgpt.data.samples.questions import image_questions
from healthgpt.data.samples.seal import sealed

# PubMedVision-style long modality labels
PUBMEDVISION_MODALITY = {
    "CT": "Computed Tomography",
    "MRI": "Magnetic Resonance Imaging",
    "X-Ray": "X-Ray",
    "Ultrasound": "Ultrasound",
    "Nuclear Medicine": "Nuclear Medicine",
    "Fundus": "Fundus Photography",
    "Pathology": "Pathology",
    "Microscopy": "Microscopy Images",
}


# A row id and an image file name that name a made-up patient (and a record number, a date):
# readers must not copy either into any output column (ids and names become pseudonyms).
PLANTED_PHI_ID = "Quimby, Rosalind MRN 1234567"
PLANTED_PHI_FILE = "Rosalind Quimby 03-14-2019.jpg"


def _sentence(answer: str | int) -> str:
    text = str(answer)
    return (text[0].upper() + text[1:] + ".") if text else text


def _turns(image: CatalogImage, start: int, count: int) -> list[dict[str, str]]:
    """`count` question/answer turns from the image's true facts, the first with <image>."""
    qas = image_questions(image)
    turns = []
    for offset in range(count):
        qa = qas[(start + offset) % len(qas)]
        question = ("<image>\n" if offset == 0 else "") + qa.question
        turns += [
            {"from": "human", "value": question},
            {"from": "gpt", "value": _sentence(qa.answer)},
        ]
    return turns


def _two_image_turns(image: CatalogImage) -> list[dict[str, str]]:
    """One question/answer pair about two images: one `<image>` placeholder per image."""
    turns = _turns(image, 0, 1)
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    return turns


def _llava_med(images: list[CatalogImage]) -> list[dict[str, Any]]:
    samples = []
    for image in images:
        for k in range(3):
            samples.append(
                {
                    "id": f"{image.name}-{k}",
                    "image": f"{image.name}.jpg",
                    "conversations": _turns(image, 2 * k, 2),
                }
            )
    ct = catalog.get("ct_head")
    bad = [
        ("outside-relative", "../../etc/passwd"),
        ("outside-absolute", "/etc/passwd"),
        ("missing", "does_not_exist.jpg"),
        ("missing-phi", PLANTED_PHI_FILE),
        ("empty", "empty.jpg"),
        ("truncated", "truncated.jpg"),
    ]
    samples += [
        # the missing image named after a patient has the patient's id too
        {
            "id": PLANTED_PHI_ID if path == PLANTED_PHI_FILE else f"bad-{key}",
            "image": path,
            "conversations": _turns(ct, 0, 1),
        }
        for key, path in bad
    ]
    # an accepted row whose id and image file name name the patient
    samples[1].update(id=PLANTED_PHI_ID, image=f"sub/{PLANTED_PHI_FILE}")
    samples.append({"id": "bad-no-conversations", "image": "ct_head.jpg", "conversations": []})
    return samples


def _pubmedvision(images: list[CatalogImage]) -> list[dict[str, Any]]:
    samples = []
    for number, image in enumerate(images):
        sample = {
            "id": f"pmv-{image.name}",
            "image": [f"images/{image.name}.jpg"],
            "modality": PUBMEDVISION_MODALITY[image.modality],
            "conversations": _turns(image, 0, 1),
        }
        if image.body_part:
            sample["body_part"] = image.body_part
        if number % 5 == 4:
            sample["split"] = "test"
        samples.append(sample)
    head_ct, head_mr = catalog.get("ct_head"), catalog.get("mr_head")
    for first, second in ((head_ct, head_mr), (head_mr, head_ct)):
        samples.append(
            {
                "id": f"pmv-multi-{first.name}",
                "image": [f"images/{first.name}.jpg", f"images/{second.name}.jpg"],
                "modality": PUBMEDVISION_MODALITY[first.modality],
                "conversations": _two_image_turns(first),
            }
        )
    return samples


@sealed
def build(dest: Path) -> None:
    dest = Path(dest)
    images = list(catalog.real_images())
    for image in images:
        catalog.write_jpeg(image, dest / "images" / f"{image.name}.jpg")
    first = images[0]
    catalog.write_jpeg(first, dest / "images" / "sub" / PLANTED_PHI_FILE)
    catalog.write_empty_jpeg(dest / "images" / "empty.jpg")
    catalog.write_truncated_jpeg(catalog.get("ct_head"), dest / "images" / "truncated.jpg")
    catalog.write_json(dest / "llava_med_instruct.json", _llava_med(images))
    lines = [json.dumps(s, ensure_ascii=False) for s in _pubmedvision(images)]
    lines.insert(3, '{"id": "pmv-broken", "image": ["images/ct_head.jpg"], "conversa')
    (dest / "pubmedvision.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    catalog.write_readme(
        dest,
        "LLaVA-style JSON sample (healthgpt)",
        real=[
            "the images: every image of healthgpt.data.samples.catalog, as JPEG "
            "(longer side <= 512):",
            *[catalog.provenance(image) for image in images],
            "the answers in the conversations: stated by each image's DICOM header or by "
            "scikit-image's description of the picture",
            "the sample format of LLaVA-Med (image as a path) and PubMedVision (image as a "
            "list, modality labels)",
        ],
        made_up=[
            "ids, question wording, the split field on every fifth PubMedVision-style sample",
            "a row id and an image file name that name a patient (all made up); no output may "
            "carry them",
            "two multi-image samples (a head CT and a head MRI together): the reader keeps the "
            "first image and records n_images",
            "bad inputs: image paths ../../etc/passwd and /etc/passwd (outside the root), "
            "does_not_exist.jpg and a file name naming a patient (missing), images/empty.jpg "
            "(0 bytes), images/truncated.jpg, "
            "a sample without conversations, and a cut-off line in pubmedvision.jsonl; all "
            "must be quarantined",
        ],
    )
