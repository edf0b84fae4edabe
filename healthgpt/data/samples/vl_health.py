"""The released VL-Health files in miniature: the stage-1 alignment file (LLaVA-558k and
PubMedVision rows told apart by their ids), the LLaVA-558k reconstruction file, the
comprehension instruction file and the generation instruction file (an input image, an
output image and an instruction). The file names inside the Hugging Face dataset beyond
`Alignment/comprehension/train_data.json` are not confirmed, so each sample is the folder
its reader is pointed at: `train_data.json` and the images its rows name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from healthgpt.data.samples import catalog
from healthgpt.data.samples.catalog import CatalogImage
from healthgpt.data.samples.llava_json import (
    PLANTED_PHI_FILE,
    PLANTED_PHI_ID,
    PUBMEDVISION_MODALITY,
    _turns,
)
from healthgpt.data.samples.llava_sets import (
    BAD_READMES,
    PLANTED_PHI_TEXT,
    bad_rows,
    caption_turns,
    llava_558k_rows,
    pubmedvision_row,
    write_listing,
    write_pubmedvision_images,
)
from healthgpt.data.samples.seal import sealed

LISTING = "train_data.json"
ALIGNMENT_LISTING = "Alignment/comprehension/train_data.json"


def _readme(dest: Path, title: str, names: list[str], layout: str, made_up: list[str]) -> None:
    catalog.write_readme(
        dest,
        title,
        real=[
            "the images:",
            *[catalog.provenance(catalog.get(name)) for name in sorted(set(names))],
            layout,
        ],
        made_up=[*made_up, *BAD_READMES],
    )


# --- alignment -----------------------------------------------------------------------------

ALIGNMENT_LLAVA = ("ct_head", "cr_chest_pa", "fundus_retina", "pathology_ihc")
ALIGNMENT_PUBMEDVISION = ("mr_head", "us_echo", "nm_whole_body", "ct_pancreas")


@sealed
def build_alignment(dest: Path) -> None:
    dest = Path(dest)
    llava = [catalog.get(name) for name in ALIGNMENT_LLAVA]
    rows = llava_558k_rows(llava, dest / "llava_558k", 4539375)
    for row in rows:
        row["image"] = f"llava_558k/{row['image']}"
    pubmedvision = [catalog.get(name) for name in ALIGNMENT_PUBMEDVISION]
    write_pubmedvision_images(pubmedvision, dest / "pubmedvision" / "images")
    for image in pubmedvision:
        row = pubmedvision_row(image, f"pmc-{image.name}", 0)
        row["image"] = [f"pubmedvision/{row['image'][0]}"]
        rows.append(row)
    planted = dict(rows[0], id="004549999")
    planted["conversations"] = [
        rows[0]["conversations"][0],
        {"from": "gpt", "value": PLANTED_PHI_TEXT},
    ]
    no_id = {key: value for key, value in rows[1].items() if key != "id"}
    truncated = "llava_558k/99999/999999999.jpg"
    catalog.write_truncated_jpeg(llava[0], dest / truncated)

    def bad(key: str, path: str) -> dict[str, Any]:
        return {"id": key, "image": path, "conversations": caption_turns(llava[0], False)}

    write_listing(dest / ALIGNMENT_LISTING, [*rows, planted, no_id, *bad_rows(bad, truncated)])
    _readme(
        dest,
        "VL-Health alignment sample (healthgpt)",
        [*ALIGNMENT_LLAVA, *ALIGNMENT_PUBMEDVISION],
        "the layout: Alignment/comprehension/train_data.json mixing LLaVA-558k rows (9-digit "
        "ids) and single-image PubMedVision rows",
        [
            "ids, captions and questions (true by each image's source), the image folders",
            "a row without an id (quarantined: its origin cannot be told)",
        ],
    )


# --- reconstruction ------------------------------------------------------------------------

RECONSTRUCTION_IMAGES = ("ct_head", "mr_abdomen", "cr_chest_pa", "fundus_retina", "microscopy_cell")
RECONSTRUCT = "<image>\nReconstruct the image."


def reconstruction_turns(extra: str = "") -> list[dict[str, str]]:
    return [{"from": "human", "value": RECONSTRUCT + extra}, {"from": "gpt", "value": "<image>"}]


@sealed
def build_reconstruction(dest: Path) -> None:
    dest = Path(dest)
    images = [catalog.get(name) for name in RECONSTRUCTION_IMAGES]
    rows = llava_558k_rows(images, dest, 5000000)
    for row in rows:
        row["conversations"] = reconstruction_turns()
    planted = dict(
        rows[0], id="005009999", conversations=reconstruction_turns(" " + PLANTED_PHI_TEXT)
    )
    truncated = "99999/999999999.jpg"
    catalog.write_truncated_jpeg(images[0], dest / truncated)

    def bad(key: str, path: str) -> dict[str, Any]:
        return {"id": key, "image": path, "conversations": reconstruction_turns()}

    write_listing(dest / LISTING, [*rows, planted, *bad_rows(bad, truncated)])
    _readme(
        dest,
        "VL-Health LLaVA-558k reconstruction sample (healthgpt)",
        list(RECONSTRUCTION_IMAGES),
        "the layout: LLaVA-558k image paths (<5 digits>/<9-digit id>.jpg) with a "
        "reconstruction instruction",
        ["ids, the instruction wording"],
    )


# --- comprehension -------------------------------------------------------------------------

COMPREHENSION_IMAGES = (
    "ct_head", "mr_abdomen", "cr_chest_pa", "us_doppler", "fundus_microaneurysms",
    "microscopy_cell", "pathology_ihc", "nm_whole_body",
)  # fmt: skip


def comprehension_row(image: CatalogImage, row_id: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "image": f"images/{image.modality.lower()}/{image.name}.jpg",
        "conversations": _turns(image, 0, 2),
        "modality": PUBMEDVISION_MODALITY[image.modality],
    }


@sealed
def build_comprehension(dest: Path) -> None:
    dest = Path(dest)
    images = [catalog.get(name) for name in COMPREHENSION_IMAGES]
    rows = []
    for image in images:
        row = comprehension_row(image, f"comp-{image.name}")
        catalog.write_jpeg(image, dest / row["image"])
        rows.append(row)
    planted = comprehension_row(images[0], PLANTED_PHI_ID)
    planted["image"] = f"images/ct/{PLANTED_PHI_FILE}"
    catalog.write_jpeg(images[0], dest / planted["image"])
    planted["conversations"][1]["value"] += " " + PLANTED_PHI_TEXT
    truncated = "images/ct/truncated.jpg"
    catalog.write_truncated_jpeg(images[0], dest / truncated)

    def bad(key: str, path: str) -> dict[str, Any]:
        return {**comprehension_row(images[0], key), "image": path}

    write_listing(dest / LISTING, [*rows, planted, *bad_rows(bad, truncated)])
    _readme(
        dest,
        "VL-Health comprehension sample (healthgpt)",
        list(COMPREHENSION_IMAGES),
        "the layout: one JSON list of {image, conversations} over the card's modalities; the "
        "answers are stated by each image's DICOM header or scikit-image's description",
        ["ids, question wording, the image folders, the modality labels"],
    )


# --- generation ----------------------------------------------------------------------------


def generation_row(
    row_id: str, instruction: str, image: str | None, output: str | None, task: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": row_id}
    if task:
        row["task"] = task
    if image:
        row["image"] = image
    if output:
        row["output_image"] = output
    human = f"<image>\n{instruction}" if image else instruction
    row["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": "<image>"}]
    return row


def _low_resolution(image: CatalogImage, path: Path, factor: int = 4) -> None:
    """The super-resolution input: the image down by `factor` and back up (BICUBIC)."""
    pil = catalog.to_pil(image)
    small = pil.resize((pil.width // factor, pil.height // factor), Image.Resampling.BICUBIC)
    catalog.write_jpeg(np.asarray(small.resize(pil.size, Image.Resampling.BICUBIC)), path)


REPORT = (
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is "
    "normal. IMPRESSION: No acute cardiopulmonary process."
)


@sealed
def build_generation(dest: Path) -> None:
    dest = Path(dest)
    ct, mr, abdomen, chest = (
        catalog.get(n) for n in ("ct_head", "mr_head", "mr_abdomen", "cr_chest_pa")
    )
    files = {
        "images/ct_to_mri/case1/input.jpg": ct,
        "images/ct_to_mri/case1/output.jpg": mr,
        "images/mri_to_ct/case1/input.jpg": mr,
        "images/mri_to_ct/case1/output.jpg": ct,
        "images/super_resolution/case1/output.jpg": abdomen,
        "images/reconstruction/case1/image.jpg": abdomen,
        "images/reconstruction/case2/image.jpg": ct,
        "images/text_to_image/case1/output.jpg": chest,
        "images/unknown/case1/input.jpg": ct,
        "images/unknown/case1/output.jpg": mr,
    }
    for path, image in files.items():
        catalog.write_jpeg(image, dest / path)
    _low_resolution(abdomen, dest / "images/super_resolution/case1/input.jpg")
    catalog.write_truncated_jpeg(ct, dest / "images/bad/truncated/input.jpg")
    catalog.write_jpeg(mr, dest / "images/bad/truncated/output.jpg")
    rows = [
        generation_row(
            "gen-ct2mri", "Convert this CT image of the head into the corresponding MRI image.",
            "images/ct_to_mri/case1/input.jpg", "images/ct_to_mri/case1/output.jpg", "ct_to_mri",
        ),
        generation_row(  # no task field: read from the instruction
            "gen-mri2ct", "Translate this MRI slice of the head into a CT slice.",
            "images/mri_to_ct/case1/input.jpg", "images/mri_to_ct/case1/output.jpg", None,
        ),
        generation_row(
            "gen-sr", "Increase the resolution of this MRI image by a factor of 4.",
            "images/super_resolution/case1/input.jpg", "images/super_resolution/case1/output.jpg",
            "super_resolution",
        ),
        generation_row(
            "gen-recon", "Reconstruct the image.", "images/reconstruction/case1/image.jpg",
            "images/reconstruction/case1/image.jpg", "reconstruction",
        ),
        generation_row(  # no output, no task field: a reconstruction by its instruction
            "gen-recon-no-output", "Reconstruct the image.",
            "images/reconstruction/case2/image.jpg", None, None,
        ),
        generation_row(  # no input image: report to X-ray; the report plants PHI
            "gen-t2i", f"Generate a chest X-ray image that matches this report:\n{REPORT} "
            f"{PLANTED_PHI_TEXT}", None, "images/text_to_image/case1/output.jpg", None,
        ),
        generation_row(  # quarantined: neither a task field nor an instruction that names one
            "gen-unknown", "Make it look nicer.", "images/unknown/case1/input.jpg",
            "images/unknown/case1/output.jpg", None,
        ),
    ]  # fmt: skip

    def bad(key: str, path: str) -> dict[str, Any]:
        folder = Path(path).parent.as_posix()
        output = (
            f"{folder}/output.jpg" if "truncated" in path else "images/ct_to_mri/case1/output.jpg"
        )
        return generation_row(
            key, "Convert this CT image into an MRI image.", path, output, "ct_to_mri"
        )

    write_listing(dest / LISTING, [*rows, *bad_rows(bad, "images/bad/truncated/input.jpg")])
    _readme(
        dest,
        "VL-Health generation sample (healthgpt)",
        ["ct_head", "mr_head", "mr_abdomen", "cr_chest_pa"],
        "the layout: one JSON list of {id, task?, image, output_image, conversations}; the "
        "report text is a made-up normal chest X-ray report",
        [
            "the pairs (a head CT and a head MRI of different people are not registered), the "
            "low-resolution input (the MRI down and up by 4, BICUBIC), ids, instructions, the "
            "output_image and task field names (the released card does not show them)",
            "a row whose task cannot be told (quarantined)",
        ],
    )
