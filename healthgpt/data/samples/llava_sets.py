"""LLaVA-558k, PubMedVision and LLaVA-Med in miniature: each official file and folder layout
with a few catalog images, questions true by the images' headers, one row whose text plants
PHI (which ingestion must scrub), and the bad rows every sample carries (`bad_rows`,
`write_listing`). The VL-Health samples (`vl_health`) use the same helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthgpt.data.samples import catalog
from healthgpt.data.samples.catalog import CatalogImage
from healthgpt.data.samples.llava_json import (
    PLANTED_PHI_FILE,
    PLANTED_PHI_ID,
    PUBMEDVISION_MODALITY,
    _turns,
    _two_image_turns,
)
from healthgpt.data.samples.seal import sealed

PLANTED_PHI_TEXT = (
    "Images sent by Dr. Horatio Pennyworth on 03/14/2019 for patient Rosalind Quimby, "
    "MRN 1234567, phone 617-555-0199."
)
PLANTED_PHI = ("Horatio", "Pennyworth", "Rosalind", "Quimby", "03/14/2019", "1234567", "617-555")
"""What the planted row names; no output may contain any of it."""

NON_UTF8 = "@@NOT-UTF8@@"  # replaced by a 0xff byte when the listing is written
BAD_IMAGE_PATHS = {
    "outside-relative": "../../etc/passwd",
    "outside-absolute": "/etc/passwd",
    "missing": PLANTED_PHI_FILE,  # a missing image named after a patient
}
BAD_READMES = [
    "bad rows: image paths ../../etc/passwd and /etc/passwd (outside the root), a missing "
    "image whose file name and row id name a patient, a truncated JPEG, a row with a byte "
    "that is not UTF-8, and a listing cut off in its last row; all must be quarantined",
    "one row whose text names a doctor, a patient, a date, a record number and a phone "
    "number (all made up); ingestion must scrub them",
]


def caption(image: CatalogImage) -> str:
    """A one-line caption true by the image's source."""
    described = image.facts.get("description")
    if described:
        return described[0].upper() + described[1:] + "."
    return f"{image.modality} image of the {image.body_part or 'body'}."


def caption_turns(image: CatalogImage, at_end: bool) -> list[dict[str, str]]:
    """A LLaVA-558k style caption turn pair, `<image>` at the start or the end."""
    prompt = "Render a clear and concise summary of the photo."
    human = f"{prompt}\n<image>" if at_end else f"<image>\n{prompt}"
    return [{"from": "human", "value": human}, {"from": "gpt", "value": caption(image)}]


def bad_rows(row: Callable[[str, str], dict[str, Any]], truncated: str) -> list[dict[str, Any]]:
    """The bad rows of every sample: `row(key, image path)` makes one in the layout's style;
    `truncated` is the path of the truncated JPEG. The non-UTF-8 row comes last."""
    rows = [
        row(PLANTED_PHI_ID if key == "missing" else f"bad-{key}", path)
        for key, path in BAD_IMAGE_PATHS.items()
    ]
    rows.append(row("bad-truncated", truncated))
    non_utf8 = row("bad-not-utf8", truncated)
    non_utf8["conversations"][-1]["value"] += NON_UTF8
    return [*rows, non_utf8]


def write_listing(path: Path, rows: list[dict[str, Any]], cut_tail: bool = True) -> Path:
    """A JSON array file as the official releases write them, with the bad bytes planted:
    `NON_UTF8` becomes a 0xff byte, and (`cut_tail`) one last row is cut off mid-way."""
    text = json.dumps(rows, ensure_ascii=False, indent=1)
    if cut_tail:
        text = (
            text[: text.rstrip().rfind("]")].rstrip()
            + ',\n {"id": "bad-cut", "image": "x.jpg", "conversa'
        )
    data = text.encode("utf-8").replace(NON_UTF8.encode(), b"\xff")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- LLaVA-558k ----------------------------------------------------------------------------

LLAVA_558K_IMAGES = (
    "ct_head",
    "mr_abdomen",
    "cr_chest_pa",
    "us_echo",
    "fundus_retina",
    "pathology_ihc",
)


def llava_558k_path(number: int) -> str:
    """`<first 5 digits>/<9-digit id>.jpg`, as images.zip unpacks."""
    image_id = f"{number:09d}"
    return f"{image_id[:5]}/{image_id}.jpg"


def llava_558k_rows(images: list[CatalogImage], dest: Path, start: int) -> list[dict[str, Any]]:
    """One caption row per image (ids from `start`), the images written where the rows say."""
    rows = []
    for offset, image in enumerate(images):
        number = start + 1111 * offset
        catalog.write_jpeg(image, dest / llava_558k_path(number))
        rows.append(
            {
                "id": f"{number:09d}",
                "image": llava_558k_path(number),
                "conversations": caption_turns(image, at_end=offset % 2 == 1),
            }
        )
    return rows


@sealed
def build_llava_558k(dest: Path) -> None:
    dest = Path(dest)
    images = [catalog.get(name) for name in LLAVA_558K_IMAGES]
    rows = llava_558k_rows(images, dest, 4539375)
    planted = dict(rows[0], id="004549999")
    planted["conversations"] = [
        rows[0]["conversations"][0],
        {"from": "gpt", "value": PLANTED_PHI_TEXT},
    ]
    truncated = llava_558k_path(999999)
    catalog.write_truncated_jpeg(images[0], dest / truncated)

    def bad(key: str, path: str) -> dict[str, Any]:
        return {"id": key, "image": path, "conversations": caption_turns(images[0], False)}

    write_listing(dest / "blip_laion_cc_sbu_558k.json", [*rows, planted, *bad_rows(bad, truncated)])
    meta = [
        {
            "id": r["id"],
            "image": r["image"],
            "blip_caption": r["conversations"][1]["value"],
            "url": "https://example.org/sample.jpg",
        }
        for r in rows
    ]
    catalog.write_json(dest / "blip_laion_cc_sbu_558k_meta.json", meta)
    catalog.write_readme(
        dest,
        "LLaVA-558k (LLaVA-Pretrain) sample (healthgpt)",
        real=[
            "the images (medical, where the real set holds LAION/CC/SBU photographs):",
            *[catalog.provenance(image) for image in images],
            "the layout: blip_laion_cc_sbu_558k.json, images in <5 digits>/<9-digit id>.jpg, "
            "the <image> token at the start or the end of the human turn",
        ],
        made_up=[
            "ids, captions (true by each image's source), the URLs of the meta file",
            *BAD_READMES,
        ],
    )


# --- PubMedVision --------------------------------------------------------------------------

PUBMEDVISION_IMAGES = (
    "ct_head",
    "mr_head",
    "cr_chest_pa",
    "us_echo",
    "nm_whole_body",
    "pathology_ihc",
)


def pubmedvision_row(image: CatalogImage, row_id: str, start: int) -> dict[str, Any]:
    row = {
        "id": row_id,
        "image": [f"images/{image.name}.jpg"],
        "conversations": _turns(image, start, 1),
        "modality": PUBMEDVISION_MODALITY[image.modality],
    }
    if image.body_part:
        row["body_part"] = image.body_part
    return row


def write_pubmedvision_images(images: list[CatalogImage], folder: Path) -> None:
    for image in images:
        catalog.write_jpeg(image, folder / f"{image.name}.jpg")


@sealed
def build_pubmedvision(dest: Path) -> None:
    dest = Path(dest)
    images = [catalog.get(name) for name in PUBMEDVISION_IMAGES]
    write_pubmedvision_images(images, dest / "images")
    catalog.write_truncated_jpeg(images[0], dest / "images" / "truncated.jpg")
    alignment = [pubmedvision_row(image, f"pmv-align-{image.name}", 0) for image in images]
    for first, second in ((images[0], images[1]), (images[1], images[0])):
        multi = pubmedvision_row(first, f"pmv-multi-{first.name}", 0)
        multi["image"] = [f"images/{first.name}.jpg", f"images/{second.name}.jpg"]
        multi["conversations"] = _two_image_turns(first)
        alignment.append(multi)
    catalog.write_json(dest / "PubMedVision_Alignment_VQA.json", alignment)
    instruction = [pubmedvision_row(image, f"pmv-it-{image.name}", 1) for image in images]
    planted = pubmedvision_row(images[0], PLANTED_PHI_ID, 0)
    planted["image"] = [f"images/sub/{PLANTED_PHI_FILE}"]
    catalog.write_jpeg(images[0], dest / "images" / "sub" / PLANTED_PHI_FILE)
    planted["conversations"][-1]["value"] += " " + PLANTED_PHI_TEXT

    def bad(key: str, path: str) -> dict[str, Any]:
        return {**pubmedvision_row(images[0], key, 0), "image": [path]}

    write_listing(
        dest / "PubMedVision_InstructionTuning_VQA.json",
        [*instruction, planted, *bad_rows(bad, "images/truncated.jpg")],
    )
    catalog.write_readme(
        dest,
        "PubMedVision sample (healthgpt)",
        real=[
            "the images:",
            *[catalog.provenance(image) for image in images],
            "the layout: PubMedVision_Alignment_VQA.json, PubMedVision_InstructionTuning_VQA.json, "
            "image lists under images/ (the unpacked images_*.zip), modality and body_part labels",
            "the answers: stated by each image's DICOM header or scikit-image's description",
        ],
        made_up=[
            "ids and question wording",
            "two multi-image rows in the alignment file: left out by default (skipped, counted), "
            "as the paper did",
            *BAD_READMES,
        ],
    )


# --- LLaVA-Med -----------------------------------------------------------------------------

# catalog image -> (made-up PMC pair id, LLaVA-Med domain flag or None)
LLAVA_MED_IMAGES = {
    "ct_head": ("31000001_F1", "ct_scan"),
    "mr_head": ("31000002_F2", "mri"),
    "cr_chest_pa": ("31000003_F1", "chest_xray"),
    "pathology_ihc": ("31000004_F3", "histology"),
    "fundus_retina": ("31000005_F1", None),
    "us_echo": ("31000006_F2", None),
}
DOMAINS = ("chest_xray", "mri", "ct_scan", "histology", "gross")


def llava_med_row(image: CatalogImage, pair_id: str, flag: str | None) -> dict[str, Any]:
    return {
        "id": pair_id,
        "image": f"{pair_id}.jpg",
        "domain": {domain: domain == flag for domain in DOMAINS},
        "conversations": _turns(image, 0, 2),
    }


@sealed
def build_llava_med(dest: Path) -> None:
    dest = Path(dest)
    rows = []
    for name, (pair_id, flag) in LLAVA_MED_IMAGES.items():
        catalog.write_jpeg(catalog.get(name), dest / "images" / f"{pair_id}.jpg")
        rows.append(llava_med_row(catalog.get(name), pair_id, flag))
    head = catalog.get("ct_head")
    planted = llava_med_row(head, "31000001_F1", "ct_scan")
    planted["id"] = PLANTED_PHI_ID
    planted["image"] = f"sub/{PLANTED_PHI_FILE}"
    catalog.write_jpeg(head, dest / "images" / "sub" / PLANTED_PHI_FILE)
    planted["conversations"][1]["value"] += " " + PLANTED_PHI_TEXT
    catalog.write_truncated_jpeg(head, dest / "images" / "31000009_F1.jpg")

    def bad(key: str, path: str) -> dict[str, Any]:
        return {**llava_med_row(head, key, "ct_scan"), "image": path}

    write_listing(
        dest / "llava_med_instruct_60k_inline_mention.json",
        [*rows, planted, *bad_rows(bad, "31000009_F1.jpg")],
    )
    urls = [
        json.dumps({"pair_id": pair_id, "url": f"https://example.org/{pair_id}.jpg"})
        for pair_id, _ in LLAVA_MED_IMAGES.values()
    ]
    (dest / "llava_med_image_urls.jsonl").write_text("\n".join(urls) + "\n", encoding="utf-8")
    catalog.write_readme(
        dest,
        "LLaVA-Med sample (healthgpt)",
        real=[
            "the images:",
            *[catalog.provenance(catalog.get(name)) for name in LLAVA_MED_IMAGES],
            "the layout: llava_med_instruct_60k_inline_mention.json with domain flags, images "
            "named <pair id>.jpg under images/, llava_med_image_urls.jsonl beside them",
            "the answers: stated by each image's DICOM header or scikit-image's description",
        ],
        made_up=["pair ids (not real PubMed figures), the URLs, question wording", *BAD_READMES],
    )
