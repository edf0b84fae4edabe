"""Real 2D medical images that ship inside PyPI packages, with the facts their sources state.

The bundled sample sources are built from these, so that every question in a sample has a
true answer: "What modality is this?" is answered from the DICOM header's Modality, "Which
body part?" from BodyPartExamined, "Is it in colour?" from PhotometricInterpretation.

- DICOM test files of pydicom and pydicom-data, rendered to 8 bits by
  `healthgpt.data.decode.dicom.read_dicom` (the pipeline's own decoder); facts are its allow-listed
  header facts plus the acquisition plane ImageType names.
- scikit-image's bundled images, facts from their docstrings. Only images inside the
  scikit-image wheel are used (retina, immunohistochemistry, cell, microaneurysms); cells3d,
  human_mitosis, kidney, skin and brain need a pooch download and are left out, so building a
  sample never touches the network.

Ultrasound files with burned-in institution names or dates (US1_*, OBXXXX1A*) are left out
on purpose: pixels are an output too. The files used here were looked at one by one, so the
catalog reads them with `burned_in_reviewed` (the ultrasound and secondary-capture rules of
`deid.BURNED_IN_RULES` would refuse them otherwise) and the public sample salt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from healthgpt.data.decode.deid import PUBLIC_SAMPLE_SALT
from healthgpt.data.sources.base import ReaderOptions

# The catalog's DICOM files are public test data whose pixels were reviewed (see above).
_CATALOG_OPTIONS = ReaderOptions(deid_salt=PUBLIC_SAMPLE_SALT, burned_in_reviewed=True)


@dataclass(frozen=True, eq=False)
class CatalogImage:
    """One real image: uint8 pixels (HxW grey or HxWx3 RGB) and what its source says of it."""

    name: str
    array: np.ndarray
    modality: str
    body_part: str | None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def is_color(self) -> bool:
        return self.array.ndim == 3

    @property
    def channels(self) -> int:
        return 3 if self.is_color else 1

    @property
    def plane(self) -> str | None:
        return self.facts.get("plane")

    @property
    def view(self) -> str | None:
        return self.facts.get("view_position")


# name -> (DICOM test file, frame to take); the files' headers are the facts' authority.
DICOM_FILES: dict[str, tuple[str, int]] = {
    "ct_head": ("J2K_pixelrep_mismatch.dcm", 0),
    "ct_neck": ("bad_sequence.dcm", 0),
    "ct_pancreas": ("explicit_VR-UN.dcm", 0),
    "ct_axial": ("693_UNCR.dcm", 0),
    "ct_small": ("CT_small.dcm", 0),
    "mr_head": ("emri_small.dcm", 5),
    "mr_abdomen": ("MR-SIEMENS-DICOM-WithOverlays.dcm", 0),
    "mr_small": ("MR_small.dcm", 0),
    "mr_spin_echo": ("MR2_UNCR.dcm", 0),
    "cr_chest_pa": ("RG1_UNCR.dcm", 0),
    "cr_extremity_ap": ("RG3_UNCR.dcm", 0),
    "us_echo": ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0),
    "us_doppler": ("color-pl.dcm", 0),
    "nm_whole_body": ("JPEG2000_UNC.dcm", 0),
}

# name -> (skimage.data function, modality, body part, facts from its docstring)
SKIMAGE_IMAGES: dict[str, tuple[str, str, str | None, dict[str, Any]]] = {
    "fundus_retina": (
        "retina",
        "Fundus",
        "eye",
        {
            "description": "fundus photograph of a normal left eye",
            "eye": "left",
            "license": "CC0 1.0",
        },
    ),
    "fundus_microaneurysms": (
        "microaneurysms",
        "Fundus",
        "eye",
        {
            "description": "detail of a retina image (green channel) with microaneurysms",
            "lesion": "microaneurysms",
            "origin": "HRF Image Database, image 07_dr",
            "license": "CC0",
        },
    ),
    "pathology_ihc": (
        "immunohistochemistry",
        "Pathology",
        "colon",
        {
            "description": "immunohistochemical staining of colonic glands",
            "stain": "DAB",
            "counterstain": "hematoxylin",
            "protein": "FHL2",
            "tissue": "colonic glands",
        },
    ),
    "microscopy_cell": (
        "cell",
        "Microscopy",
        None,
        {
            "description": "quantitative phase image of a cell floating in saline",
            "technique": "quantitative phase imaging",
            "pixel_spacing_um": 0.107,
        },
    ),
}


def _plane(image_type: list[str]) -> str | None:
    for plane in ("AXIAL", "CORONAL", "SAGITTAL"):
        if plane in image_type:
            return plane.lower()
    return None


def dicom_image(name: str) -> CatalogImage:
    """Render one catalog DICOM through the pipeline's decoder."""
    from pydicom.data import get_testdata_file

    from healthgpt.data.decode.dicom import read_dicom

    file_name, frame = DICOM_FILES[name]
    path = get_testdata_file(file_name)
    if path is None:
        raise FileNotFoundError(f"{file_name} is not installed (pip install pydicom-data)")
    decoded = read_dicom(Path(path), _CATALOG_OPTIONS)
    array = decoded.frames[frame]
    facts = dict(decoded.facts)
    facts.update(
        package="pydicom-data" if "data_store" in str(path) else "pydicom",
        file=file_name,
        frame_index=frame,
        color=array.ndim == 3,
    )
    if _plane(facts.get("image_type", [])):
        facts["plane"] = _plane(facts["image_type"])
    return CatalogImage(name, array, decoded.modality, decoded.body_part, facts)


def skimage_image(name: str) -> CatalogImage:
    """Load one of scikit-image's bundled (in-wheel) images."""
    import skimage.data

    function, modality, body_part, extra = SKIMAGE_IMAGES[name]
    array = np.ascontiguousarray(getattr(skimage.data, function)(), dtype=np.uint8)
    facts = {
        "package": "scikit-image",
        "function": f"skimage.data.{function}",
        "rows": array.shape[0],
        "columns": array.shape[1],
        "n_frames": 1,
        "color": array.ndim == 3,
        **extra,
    }
    return CatalogImage(name, array, modality, body_part, facts)


@functools.cache
def real_images() -> tuple[CatalogImage, ...]:
    """Every catalog image, in a fixed order (DICOM first, then scikit-image); cached."""
    return tuple(
        [dicom_image(name) for name in DICOM_FILES]
        + [skimage_image(name) for name in SKIMAGE_IMAGES]
    )


def get(name: str) -> CatalogImage:
    """One catalog image by name."""
    for image in real_images():
        if image.name == name:
            return image
    raise KeyError(f"no catalog image {name!r}")


def select(*, modality: str | None = None, body_part: str | None = None) -> list[CatalogImage]:
    """Catalog images filtered by modality and/or body part."""
    return [
        image
        for image in real_images()
        if (modality is None or image.modality == modality)
        and (body_part is None or image.body_part == body_part)
    ]


def to_pil(image: CatalogImage | np.ndarray, max_side: int | None = 512) -> Image.Image:
    """A PIL image, downscaled (never upscaled) so its longer side is at most `max_side`."""
    array = image.array if isinstance(image, CatalogImage) else image
    pil = Image.fromarray(array)
    if max_side and max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.resize(size, Image.Resampling.LANCZOS)
    return pil


def write_jpeg(
    image: CatalogImage | np.ndarray, path: Path, max_side: int | None = 512, quality: int = 90
) -> Path:
    """Write a catalog image as a JPEG (deterministic bytes for the same pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image, max_side).save(path, format="JPEG", quality=quality, optimize=False)
    return path


def jpeg_bytes(image: CatalogImage | np.ndarray, max_side: int | None = 512) -> bytes:
    """The JPEG `write_jpeg` would write, as bytes (for Parquet fixtures)."""
    import io

    buffer = io.BytesIO()
    to_pil(image, max_side).save(buffer, format="JPEG", quality=90, optimize=False)
    return buffer.getvalue()


def write_empty_jpeg(path: Path) -> Path:
    """A bad input every sample carries: a zero-byte `.jpg`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(image: CatalogImage, path: Path) -> Path:
    """A bad input every sample carries: the first third of a real JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(image)
    path.write_bytes(data[: len(data) // 3])
    return path


def write_json(path: Path, payload: Any) -> Path:
    """Deterministic, human-readable JSON (non-ASCII kept, for SLAKE's Chinese rows)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def write_readme(dest: Path, title: str, real: list[str], made_up: list[str]) -> Path:
    """`SAMPLE_README.txt`: what in a sample is real and what is made up (also the marker
    by which checks tell a bundled sample from the full source)."""
    lines = [title, "=" * len(title), "", "Real:"]
    lines += [f"- {line}" for line in real]
    lines += ["", "Made up:"]
    lines += [f"- {line}" for line in made_up]
    path = dest / "SAMPLE_README.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def provenance(image: CatalogImage) -> str:
    """Where a catalog image comes from, for the README."""
    origin = image.facts.get("file") or image.facts.get("function")
    return f"{image.name}: {image.facts['package']} {origin} ({image.modality}, {image.body_part})"
